"""``--resume auto`` for a MindSpore job of one or several ranks: every rank resumes from the same global step.

Each rank keeps its own checkpoint series (BatchNorm running statistics are per rank, there is no SyncBN), and a
rank killed in the middle of a save leaves the ranks' newest checkpoints one save apart. So each rank lists the
global steps of its files, MindSpore's ``AllGather`` (CPU collectives of msrun's cluster, HCCL or NCCL elsewhere)
collects the ``common.resume.pack`` rows of all ranks, and ``common.resume.agree`` picks the newest step every
rank holds; each rank then loads ITS OWN file of that step. No rank ever reads another rank's files, and a file
appears under its final name only once complete (``save_ckpt`` renames it into place), so a half-written file is
never read.

A checkpoint records the rank count of the job that wrote it (``WORLD_KEY``); another rank count is refused on
every rank with ``common.resume.check_world`` (one line, exit 2), before anything is trained.
"""
from __future__ import annotations

from typing import Callable, List, NamedTuple, Optional

import numpy as np

from common.checkpoint import CheckpointError, latest_valid, remove_stale_temps
from common.resume import SLOTS, agree, check_world, pack, unpack

from .checkpoint import WORLD_KEY, load_ckpt, meta_value

NONE = -1


def saved_world(params: dict) -> Optional[int]:
    """The rank count a checkpoint records (None: written before it was recorded, or by an original)."""
    value = meta_value(params, WORLD_KEY)
    return None if value is None else int(value)


class Resumed(NamedTuple):
    path: str
    global_step: int
    params: dict  # the loaded checkpoint (load_ckpt), so the caller does not read it twice


_GATHER = {}


def all_gather_rows(row: List[int]) -> np.ndarray:
    """Every rank's ``row`` (same length on all ranks), as a (ranks, len) int32 array, in rank order.

    MindSpore's AllGather in a one-op Cell, run in whatever mode the caller set (graph mode in the recipes); a
    collective, so every rank must call it the same number of times with rows of the same length.
    """
    import mindspore as ms
    from mindspore import nn, ops

    if "cell" not in _GATHER:
        class _Gather(nn.Cell):
            def __init__(self):
                super().__init__()
                self.gather = ops.AllGather()

            def construct(self, x):
                return self.gather(x)
        _GATHER["cell"] = _Gather()
    out = _GATHER["cell"](ms.Tensor(np.asarray([row], dtype=np.int32)))
    return out.asnumpy()


def _one_rank(row: List[int]) -> np.ndarray:
    return np.asarray([row], dtype=np.int64)


def agree_resume(series, step_of: Callable, world: int, rank: int = 0, log=print,
                 gather: Optional[Callable] = None, own: bool = True) -> Optional[Resumed]:
    """The checkpoint of ``series`` (this rank's own) to resume from, the same global step on every rank.

    ``step_of(path)``: the global step of a file of the series. ``gather``: a row -> all ranks' rows collective
    (default: :func:`all_gather_rows` when ``world`` > 1). Returns None for a fresh start (no rank has a
    checkpoint, or the ranks have none of a common step: said in one line). Raises ``RecipeError`` (one line)
    on every rank when any rank's checkpoint was written by a job of another rank count. Unreadable files are
    skipped (one line each); if the agreed step's file is unreadable on some rank, that rank drops it and the
    ranks agree again, on an older step. ``own``: the series is this rank's own folder, where the temp files of a
    save a kill cut short are removed; False for a series another rank writes (e.g. rank 0's, shared), which is
    only read.
    """
    if gather is None:
        gather = all_gather_rows if world > 1 else _one_rank
    if own:
        remove_stale_temps(series.directory, log=log)  # only this rank writes into its own folder
    loaded = {}

    def _load(path):
        loaded[str(path)] = load_ckpt(path)
        return True
    # the newest readable file: the one resumed from unless another rank lacks its step (checked for the rank
    # count before anything else, so a job of another size stops even when no step is held in common)
    newest = latest_valid(series.files(), _load, log=log, key=series._order)
    held = ({int(step_of(p)): str(p) for p in series.files() if series._order(p) <= series._order(newest)}
            if newest is not None else {})
    first = [saved_world(loaded[str(newest)]) or NONE, int(step_of(newest))] if newest is not None else [NONE, NONE]
    rows = gather(first + pack(held))
    _refuse(rows, world, rank, str(newest))
    while True:
        step = agree([unpack(r[2:]) for r in rows], log=log)
        if step is None:
            return None
        path = held[step]
        params = loaded.get(path)
        if params is None:
            try:
                params = load_ckpt(path)
            except CheckpointError as exc:
                log(f"resume: skipping {path}: unreadable ({exc})")
        # [rank count it records, step, readable]: every rank learns whether every rank could read its file
        status = [NONE if params is None else (saved_world(params) or NONE), step, int(params is not None)]
        status_rows = gather(status + [NONE] * (SLOTS - 1))
        _refuse(status_rows, world, rank, path)
        if all(int(r[2]) == 1 for r in status_rows):
            return Resumed(path, step, params)
        if params is None:
            held.pop(step)  # the others still hold it, so agree() now picks an older step (or none)
        rows = gather([NONE, NONE] + pack(held))


def _refuse(rows, world: int, rank: int, own_path: str) -> None:
    """Raise check_world's one line on every rank when any rank's row names a checkpoint of another rank count."""
    for r, row in enumerate(rows):
        saved, step = int(row[0]), int(row[1])
        if saved != NONE and saved != world:
            where = own_path if r == rank else f"rank {r}'s checkpoint of global step {step}"
            check_world(where, saved, world)
