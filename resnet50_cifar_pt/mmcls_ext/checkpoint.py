"""Checkpoints: mmcv's layout (``meta``, ``state_dict``, ``optimizer``), safe to read, atomic to write.

mmcv 1.7 reads local checkpoints with a bare ``torch.load``; a checkpoint is a pickle and may come from
anywhere, so on import this module puts a ``weights_only=True`` reader in place of mmcv's local-file
loader. Every ``load_checkpoint`` / ``runner.resume`` / ``load_from`` then goes through it.
"""
from __future__ import annotations

import os
import pickle
import re
import shutil
import time
from pathlib import Path

import mmcv
import torch
from mmcv.parallel import is_module_wrapper
from mmcv.runner.checkpoint import CheckpointLoader, get_state_dict, weights_to_cpu

from common.checkpoint import CheckpointError, atomic_write, remove_stale_temps

EPOCH_FILE = re.compile(r"^epoch_(\d+)\.pth$")


def safe_load(path, map_location="cpu"):
    """``torch.load(weights_only=True)``; any failure is a one-line ``CheckpointError`` naming the file."""
    path = os.path.expanduser(str(path))
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, KeyError,
            AttributeError, TypeError, IndexError) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated, corrupt or unsafe): {_reason(exc)}") \
            from None


def _reason(exc) -> str:
    """One line of why torch.load failed: for a refused pickle global the line naming it (torch's first lines
    only say how to load the file unsafely), else the message's first line."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    for line in text.splitlines():
        if "WeightsUnpickler error:" in line:
            return line.split("WeightsUnpickler error:", 1)[1].strip().split(". ")[0][:200]
    return text.splitlines()[0][:200] if text else type(exc).__name__


def load_weights(model, path, what="the config's model", ckpt=None):
    """Load ``path``'s weights into ``model`` as mmcv's ``load_checkpoint`` reads them (``state_dict`` or a bare
    dict, ``module.`` prefixes stripped) and return the checkpoint; one-line ``CheckpointError`` naming the file
    when the weights do not fit ``model`` exactly. ``ckpt``: the file already read by ``safe_load``.

    mmcv loads with ``strict=False`` by default and only logs missing, unexpected or wrongly shaped tensors, so
    evaluating or exporting (say) a 10-class checkpoint with the 100-class config ran a randomly initialised
    head and reported its accuracy. BatchNorm's ``num_batches_tracked`` counters may be absent (mmcv's rule).
    """
    ckpt = safe_load(path) if ckpt is None else ckpt
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"{path}: no state_dict of tensors in this checkpoint")
    state = {re.sub(r"^module\.", "", k): v for k, v in state.items()}
    theirs = {k: tuple(v.shape) for k, v in state.items()}
    ours = {k: tuple(v.shape) for k, v in get_state_dict(model).items()}
    missing = [k for k in ours if k not in theirs and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in theirs if k not in ours]
    shapes = [f"{k}: checkpoint {theirs[k]}, model {ours[k]}" for k in ours if k in theirs and theirs[k] != ours[k]]
    problems = [f"{len(keys)} {kind} ({', '.join(keys[:2])}{', ...' if len(keys) > 2 else ''})"
                for kind, keys in (("wrongly shaped", shapes), ("missing", missing), ("unexpected", unexpected))
                if keys]
    if problems:
        raise CheckpointError(f"{path}: does not fit {what}: " + "; ".join(problems))
    (model.module if is_module_wrapper(model) else model).load_state_dict(state, strict=False)
    return ckpt


@CheckpointLoader.register_scheme(prefixes="", force=True)
def load_from_local(filename, map_location=None):  # mmcv logs the name after "load_from_"
    return safe_load(filename, map_location)


def save_checkpoint(model, path, optimizer=None, meta=None) -> Path:
    """Write ``path`` through a temp file + rename: a run killed mid-save keeps the previous checkpoint."""
    if is_module_wrapper(model):
        model = model.module
    meta = dict(meta or {})
    meta.update(mmcv_version=mmcv.__version__, time=time.asctime())
    if getattr(model, "CLASSES", None) is not None:
        meta["CLASSES"] = list(model.CLASSES)
    ckpt = {"meta": meta, "state_dict": weights_to_cpu(get_state_dict(model))}
    if optimizer is not None:
        ckpt["optimizer"] = optimizer.state_dict()
    return atomic_write(path, lambda tmp: torch.save(ckpt, tmp))


def point_latest(target: Path, link: Path) -> None:
    """Make ``link`` name ``target`` in one rename (a symlink, or a copy where links are not allowed)."""
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    try:
        if os.path.lexists(tmp):
            os.remove(tmp)
        os.symlink(target.name, tmp)
        os.replace(tmp, link)
    except OSError:
        if os.path.lexists(tmp):
            os.remove(tmp)
        atomic_write(link, lambda t: shutil.copyfile(target, t))


def is_valid(path) -> bool:
    ckpt = safe_load(path)
    return isinstance(ckpt, dict) and "state_dict" in ckpt and isinstance(ckpt.get("meta"), dict) \
        and "epoch" in ckpt["meta"]


def find_resume(work_dir, log=print):
    """Newest readable ``epoch_N.pth`` in ``work_dir`` (corrupt ones are reported and skipped), or None.

    For train.py's --resume auto only: it also deletes the temp files of saves a kill interrupted."""
    work_dir = Path(work_dir)
    if not work_dir.is_dir():
        return None
    remove_stale_temps(work_dir, log=log)
    found = [p for p in work_dir.iterdir() if EPOCH_FILE.match(p.name)]
    # by epoch number, not mtime: copying a work dir resets mtimes
    found.sort(key=lambda p: int(EPOCH_FILE.match(p.name).group(1)), reverse=True)
    for p in found:
        try:
            if is_valid(p):
                return p
            log(f"resume: skipping {p}: no state_dict/meta.epoch in it")
        except CheckpointError as exc:
            log(f"resume: skipping {exc}")
    return None
