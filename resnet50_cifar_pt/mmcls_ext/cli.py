"""What the three entry points (tools/train.py, test.py, export.py) share: config loading and the
one-line error exit."""
from __future__ import annotations

import os
import sys


def load_config(path, cfg_options=None):
    """The mmcv Config at ``path`` with ``--cfg-options`` merged; a missing file is one clear error."""
    from mmcv import Config
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: config file not found")
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def run(fn, args, errors) -> int:
    """``fn(args)``; an expected error (``errors``) becomes one ``ERROR:`` line and exit status 2."""
    try:
        return fn(args)
    except errors as exc:
        print(f"ERROR: {exc}", file=sys.stderr, flush=True)
        return 2
