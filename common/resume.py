"""Which checkpoint a multi-rank job resumes from: the same step on every rank, decided from every rank's files.

A rank killed in the middle of a save leaves its previous checkpoint (saves are atomic), so after a lost rank
the ranks' newest checkpoints can differ by one save; each rank choosing "my newest" alone would restart the
job from two different steps. Instead every rank lists the global steps of the checkpoints it can read, the
recipe's own collective gathers the lists (packed to ``SLOTS`` integers each, so every rank sends the same
shape), and :func:`agree` picks the newest step that every rank holds. Framework-neutral: no import of
TensorFlow, torch or MindSpore here.

A job with another rank count than the one that wrote the checkpoint would resume with another global batch
and data shard per rank, so :func:`check_world` stops it with one line (the README of each recipe says so).
"""
from __future__ import annotations

from typing import Iterable, List, Optional, Sequence

from .cli import RecipeError

SLOTS = 16  # newest global steps per rank that take part in the choice (older ones are pruned anyway)
PAD = -1


def pack(steps: Iterable[int]) -> List[int]:
    """The newest ``SLOTS`` global steps, newest first, padded with ``PAD`` to exactly ``SLOTS`` entries."""
    newest = sorted({int(s) for s in steps if int(s) >= 0}, reverse=True)[:SLOTS]
    return newest + [PAD] * (SLOTS - len(newest))


def unpack(row: Iterable) -> List[int]:
    return [int(s) for s in row if int(s) != PAD]


def agree(steps_by_rank: Sequence[Iterable[int]], log=print) -> Optional[int]:
    """The newest global step every rank holds a readable checkpoint of; None for a fresh start.

    None when no rank has a checkpoint, and also when the ranks have checkpoints but none in common (a rank
    was killed during its first save): all ranks then start from scratch together, which is said in one line.
    """
    sets = [set(unpack(pack(s))) for s in steps_by_rank]
    if not any(sets):
        return None
    common = set.intersection(*sets)
    if common:
        return max(common)
    held = "; ".join(f"rank {r}: {', '.join(map(str, sorted(s, reverse=True))) or 'none'}"
                     for r, s in enumerate(sets))
    log(f"resume: the ranks hold no checkpoint of a common step ({held}); every rank starts from scratch")
    return None


def check_world(path, saved_world, world: int) -> None:
    """One-line refusal of a checkpoint written by a job with another number of ranks."""
    if saved_world is None or int(saved_world) == int(world):
        return
    raise RecipeError(f"{path}: written by a {int(saved_world)}-rank job, this job has {int(world)}; resuming "
                      f"would change the global batch and each rank's data shard: restart with "
                      f"{int(saved_world)} ranks, or use a new output folder")
