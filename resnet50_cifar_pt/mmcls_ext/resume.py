"""Which checkpoint each rank of a job resumes from, and the rank count a checkpoint was written by.

Every rank keeps its own checkpoint series: rank 0 the original ``epoch_N.pth`` (with ``latest.pth``), rank R > 0
``rankR_epoch_N.pth`` (its newest ``KEEP`` only). The ranks' weights and SGD momenta are identical (DDP averages
the gradients), but BatchNorm running statistics are each rank's own (no SyncBN, ``broadcast_buffers=False``, as
the original), so a rank that resumed from rank 0's file would carry rank 0's statistics from then on. A rank
only ever reads its own series, written by itself through a temp file + rename (``common.checkpoint``), so no
rank can read a file another rank is still writing; the temps a kill left are removed at the next start.

With ``--resume auto`` on several ranks, each rank lists the global steps of its readable checkpoints, the ranks
all-gather them as fixed-shape rows (``common.resume.pack``) and ``common.resume.agree`` picks the newest step
every rank holds: after a kill the ranks' newest files can be one save apart (a rank killed inside its save),
and each rank loads its own file of the agreed step.

This module imports neither torch nor mmcv (the 8p scripts run it as a check before torchrun starts: see
``main``): the checkpoint's metadata is read from the zip's pickle with every torch object replaced by a
placeholder, which also never runs code from the file.
"""
from __future__ import annotations

import argparse
import collections
import pickle
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

from common.checkpoint import CheckpointError, remove_stale_temps
from common.cli import RecipeError
from common.resume import SLOTS, agree, check_world, pack, unpack

KEEP = 2  # newest files each rank R > 0 keeps: after any kill the ranks' newest checkpoints are <= 1 save apart


def series_template(rank: int) -> str:
    """The file name template (``str.format`` with the epoch) of rank ``rank``'s checkpoint series."""
    return "epoch_{}.pth" if int(rank) == 0 else f"rank{int(rank)}_epoch_{{}}.pth"


def _series_pattern(rank: int):
    return re.compile("^" + re.escape(series_template(rank)).replace(r"\{\}", r"(\d+)") + "$")


def _placeholder(*args, **kwargs):
    return None


class _MetaUnpickler(pickle.Unpickler):
    """Unpickles a torch checkpoint's ``data.pkl`` without torch: tensors and storages become None."""

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" or module.startswith("torch."):
            return _placeholder
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a checkpoint")

    def persistent_load(self, pid):
        return None


def read_checkpoint_meta(path) -> dict:
    """The ``meta`` dict of an mmcv checkpoint written by ``torch.save``; a truncated or foreign file is one
    ``CheckpointError`` naming it (a cut zip has no central directory, so truncation is always caught)."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            if len(names) != 1:
                raise CheckpointError(f"{path}: not a readable checkpoint (no data.pkl in it)")
            with zf.open(names[0]) as fh:
                ckpt = _MetaUnpickler(fh).load()
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, pickle.UnpicklingError, OSError, EOFError, ValueError, KeyError, TypeError,
            AttributeError, IndexError) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated, corrupt or unsafe): "
                              f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    meta = ckpt.get("meta") if isinstance(ckpt, dict) else None
    if not isinstance(meta, dict) or "state_dict" not in ckpt or "epoch" not in meta or "iter" not in meta:
        raise CheckpointError(f"{path}: not a checkpoint of this recipe (no state_dict or meta.epoch/iter)")
    return meta


@dataclass
class Candidate:
    path: Path
    epoch: int
    step: int                  # meta.iter: the global step the checkpoint was saved after
    world: Optional[int]       # meta.world_size: ranks of the job that wrote it


def own_checkpoints(work_dir, rank: int, log: Callable[[str], None] = print, limit: int = SLOTS,
                    clean: bool = True) -> List[Candidate]:
    """Rank ``rank``'s readable checkpoints in ``work_dir``, newest epoch first (at most ``limit``); unreadable
    ones are named through ``log`` and skipped. ``clean``: first remove the temp files of interrupted saves (only
    at a training start, when no rank of the job is saving; ranks sharing the folder may race there, which
    ``remove_stale_temps`` tolerates)."""
    work_dir = Path(work_dir)
    if not work_dir.is_dir():
        return []
    if clean:
        remove_stale_temps(work_dir, log=log)
    pattern = _series_pattern(rank)
    found = sorted(((int(m.group(1)), p) for p in work_dir.iterdir() if (m := pattern.match(p.name))),
                   key=lambda t: t[0], reverse=True)
    out = []
    for _, p in found:
        try:
            meta = read_checkpoint_meta(p)
        except CheckpointError as exc:
            log(f"resume: skipping {exc}")
            continue
        world = meta.get("world_size")
        out.append(Candidate(p, int(meta["epoch"]), int(meta["iter"]), None if world is None else int(world)))
        if len(out) >= limit:
            break
    return out


def choose(work_dir, rank: int, world: int, gather: Callable[[List[int]], List[List[int]]],
           log: Callable[[str], None] = print) -> Optional[Candidate]:
    """``--resume auto`` on ``world`` ranks: this rank's own checkpoint of the step every rank holds (None: all
    ranks start from scratch). ``gather(row)`` is the job's all-gather of one equal-length int row per rank.

    Each row is ``pack(steps)`` plus the rank count of the first listed checkpoint written by a job of another
    rank count (0: none), so that every rank refuses together, instead of one rank exiting while the others wait.
    """
    own = own_checkpoints(work_dir, rank, log)
    foreign = next((c for c in own if c.world is not None and c.world != int(world)), None)
    rows = gather(pack(c.step for c in own) + [foreign.world if foreign else 0])
    for r, row in enumerate(rows):
        if row[SLOTS]:
            if r == rank:
                check_world(foreign.path, foreign.world, world)
            raise RecipeError(f"rank {r} holds a checkpoint in its series written by a {row[SLOTS]}-rank job, this "
                              f"job has {int(world)}: restart with {row[SLOTS]} ranks, or use a new output folder")
    step = agree([unpack(row[:SLOTS]) for row in rows], log=log if rank == 0 else (lambda m: None))
    if step is None:
        return None
    return next(c for c in own if c.step == step)


def main(argv=None) -> int:
    """The 8p scripts' check before torchrun: ``--resume auto|PATH`` in ``--work-dir`` would resume checkpoints
    written by a job of another rank count than ``--world``: one ``ERROR:`` line (exit 2) before any worker
    starts (the workers check again, but under torchrun their exit is torchrun's, with its failure report)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--work-dir", required=True)
    parser.add_argument("--resume", required=True, help="auto or a checkpoint path")
    parser.add_argument("--world", type=int, required=True, help="ranks of the job about to start")
    args = parser.parse_args(argv)
    if args.resume != "auto":
        meta = read_checkpoint_meta(args.resume)
        check_world(args.resume, meta.get("world_size"), args.world)
        return 0
    work_dir = Path(args.work_dir)
    ranks = {0} | {int(m.group(1)) for p in (work_dir.iterdir() if work_dir.is_dir() else ())
                   if (m := re.match(r"^rank(\d+)_epoch_\d+\.pth$", p.name))}
    for rank in sorted(ranks):
        for c in own_checkpoints(work_dir, rank, log=lambda m: None, clean=False):
            check_world(c.path, c.world, args.world)
    return 0


if __name__ == "__main__":
    from common import cli
    cli.run(main, sys.argv[1:], errors=(CheckpointError,))
