"""One override order for every recipe: built-in defaults < config file < command line.

``parse_args(parser, argv, config)`` sets the parser's defaults from ``config`` (a dict, or a YAML/JSON
file path) and refuses keys the parser does not know, so a misspelt config key fails loudly instead of
being silently ignored.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


class ConfigError(ValueError):
    pass


def load_config_file(path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    text = p.read_text()
    try:
        if p.suffix in (".yaml", ".yml"):
            import yaml  # lazy: only the recipes with YAML configs need it
            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:
        raise ConfigError(f"{p}: cannot parse ({type(exc).__name__}: {str(exc).splitlines()[0][:100]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    return data


def apply_config(parser: argparse.ArgumentParser, config: dict, source: str = "config") -> None:
    known = {a.dest for a in parser._actions}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}")
    parser.set_defaults(**config)


def parse_args(parser: argparse.ArgumentParser, argv=None, config=None, source=None):
    if config is not None:
        if not isinstance(config, dict):
            source = source or str(config)
            config = load_config_file(config)
        apply_config(parser, config, source or "config")
    return parser.parse_args(argv)
