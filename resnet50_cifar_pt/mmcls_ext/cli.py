"""What the three entry points (tools/train.py, test.py, export.py) share: config loading and the errors
that end them with one line and exit status 2 (through ``common.cli``)."""
from __future__ import annotations

import os

from mmcv import DictAction

from common.checkpoint import CheckpointError
from common.cifar import DatasetError

from .device import DeviceError

# the expected failures of every entry point: a missing file, a damaged dataset or checkpoint, a missing device
ERRORS = (DatasetError, CheckpointError, DeviceError, FileNotFoundError)


def load_config(path, cfg_options=None):
    """The mmcv Config at ``path`` with ``--cfg-options`` merged; a missing file is one clear error."""
    from mmcv import Config
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: config file not found")
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


class MergeDictAction(DictAction):
    """Repeated --cfg-options accumulate (a script's overrides plus the user's) instead of replacing."""

    def __call__(self, parser, namespace, values, option_string=None):
        before = dict(getattr(namespace, self.dest, None) or {})
        super().__call__(parser, namespace, values, option_string)
        setattr(namespace, self.dest, {**before, **getattr(namespace, self.dest)})
