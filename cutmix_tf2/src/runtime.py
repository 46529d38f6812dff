"""What train.py's steps hand each other (Context, Data, State, Result) and the helpers behind them.

``check_inputs`` and ``cluster_info`` use numpy only: train.py calls them before TensorFlow is imported, so
bad input fails fast and before anything is written.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from common.checkpoint import CheckpointError, atomic_write, atomic_write_dir, remove_stale_temps
from common import resume as agreement
from common.cli import RecipeError
from common.digest import weights_digest
from src import checkpointing
from src.data import load_arrays


@dataclass
class Context:
    """The process's place in the job and what setup() resolved."""
    rank: int
    world: int
    arrays: tuple  # (x_train, y_train, x_test, y_test, class names), as src.data.load_arrays returns them
    out: Path
    device: str = "cpu"
    policy: str = "float32"
    strategy: Any = None
    keep_rank_files: bool = False  # --rank_checkpoints: workers other than the chief keep their saves

    @property
    def is_chief(self) -> bool:
        return self.rank == 0

    @property
    def ckpt_root(self) -> Path:
        return self.out / "checkpoints"

    @property
    def rank_dir(self) -> Path:
        """This worker's own folder (the launcher's log folder): its saves with --rank_checkpoints."""
        return self.out / f"rank_{self.rank}"

    @property
    def scratch(self) -> Path:
        """Where this worker saves: the chief keeps its checkpoints, the others' are thrown away at the end
        (kept in rank_<r>/checkpoints with --rank_checkpoints)."""
        if self.is_chief:
            return self.ckpt_root
        return self.rank_dir / "checkpoints" if self.keep_rank_files else self.out / f".scratch_rank{self.rank}"

    @property
    def own_roots(self) -> list:
        """Where this worker's own checkpoint series may be: both places of a worker other than the chief, so
        that a restart with or without --rank_checkpoints finds what the killed job saved."""
        if self.is_chief:
            return [self.ckpt_root]
        return [self.rank_dir / "checkpoints", self.out / f".scratch_rank{self.rank}"]

    def say(self, *args) -> None:
        if self.is_chief:
            print(*args, flush=True)


@dataclass
class Data:
    train: Callable[[int], Any]  # first epoch to run -> the pipeline of epochs first..epochs-1, back to back
    test: Any
    steps: int                   # per epoch: the shard's batches, capped by --train_steps
    global_batch: int
    shard: Optional[dict] = None  # several workers: this one's part of the training set, {"size", "sha256"}


@dataclass
class State:
    epoch: int                   # epochs done
    global_step: int
    checkpoint: Optional[Path] = None


@dataclass
class Result:
    history: dict                # Keras History: per-epoch loss, accuracy, val_loss, val_accuracy
    meter: Any                   # common.throughput.ThroughputMeter of this run's steps
    params: tuple                # (trainable, total)
    steps: int                   # per epoch
    first_epoch: int             # epochs done before this run (a resumed run's)
    global_step: int             # at the end (a resumed run's steps before it included)


def cluster_info():
    """(rank, world size) from TF_CONFIG, which MultiWorkerMirroredStrategy reads too."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return 0, 1
    try:
        cfg = json.loads(raw)
        workers = cfg["cluster"]["worker"]
        return int(cfg["task"]["index"]), len(workers)
    except (ValueError, KeyError, TypeError) as exc:
        raise RecipeError(f"TF_CONFIG: malformed ({exc})") from None


def check_inputs(args):
    """The CIFAR-10 arrays, after the checks that need no TensorFlow (data, --tensorboard, an explicit --resume)."""
    arrays = load_arrays(args.data_dir)
    if args.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise RecipeError("--tensorboard: the tensorboard package is not installed (pip install tensorboard)")
    if args.resume and args.resume != "auto":
        try:
            checkpointing.verify(args.resume)
        except CheckpointError as exc:
            raise RecipeError(f"cannot resume: {exc}") from None
    return arrays


def make_output_dir(path) -> Path:
    out = Path(path).resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RecipeError(f"{out}: cannot create output folder ({exc.strerror})") from None
    return out


def find_checkpoint(args, ctx) -> Optional[Path]:
    """The checkpoint --resume names: the newest valid one under the output folder for ``auto``."""
    if args.resume != "auto":
        return Path(args.resume)
    remove_stale_temps(ctx.ckpt_root, log=ctx.say)  # what saves cut short by a kill left behind
    ckpt = checkpointing.find_latest(ctx.ckpt_root, log=ctx.say)
    if ckpt is None:
        ctx.say(f"resume: no valid checkpoint in {ctx.ckpt_root}; starting from scratch")
    return ckpt


def readable_checkpoints(ctx, log=print) -> dict:
    """{global step: checkpoint folder} this worker can resume from: its own series (each holds its
    per-replica state, local.npz); only when it has none, the chief's shared one where this worker sees it
    (same output folder; e.g. a finished job continued, whose other ranks deleted their series). Counting the
    shared steps beside its own would let the job agree on a step the worker has no state of, where an older
    step it does hold resumes exactly. Saves are atomic (temp folder + rename) and hash-checked: a save another
    rank is making is never listed."""
    found = {}
    for root in ctx.own_roots:
        remove_stale_temps(root, log=log)  # only this worker saves there, and it is not saving now
        for step, path in checkpointing.valid_steps(root, log=log).items():
            found.setdefault(step, path)
    if not ctx.is_chief and not found:
        for step, path in checkpointing.valid_steps(ctx.ckpt_root, log=log).items():
            found.setdefault(step, path)
    return found


def gather_rows(strategy, row) -> list:
    """Every worker's ``row`` (same length everywhere), in rank order, through the strategy's all-gather."""
    import tensorflow as tf

    value = tf.constant([row], dtype=tf.int64)

    @tf.function
    def gather():
        return strategy.run(lambda: tf.distribute.get_replica_context().all_gather(value, axis=0))

    return strategy.experimental_local_results(gather())[0].numpy().tolist()


def agree_checkpoint(ctx) -> Optional[Path]:
    """--resume auto in a multi-worker job: the checkpoint of the newest global step that EVERY worker can read.

    After a lost rank the workers' newest checkpoints may differ by one save (one was killed while saving, or
    saved before the others); each taking its own newest would restart the job from two steps. Each worker
    lists its readable steps, the rows are all-gathered, and common.resume.agree picks the same step on all."""
    held = readable_checkpoints(ctx)
    rows = gather_rows(ctx.strategy, agreement.pack(held))
    step = agreement.agree(rows, log=ctx.say)
    if step is None:
        if not any(agreement.unpack(r) for r in rows):
            ctx.say(f"resume: no valid checkpoint in {ctx.ckpt_root}; starting from scratch")
        return None
    return held[step]


def own_checkpoint(ctx, ckpt, epoch) -> Optional[Path]:
    """This worker's own checkpoint of ``epoch`` (the one holding its per-replica state), or None."""
    for root in ctx.own_roots:
        path = Path(root) / Path(ckpt).name
        if path.is_dir():
            try:
                meta = checkpointing.verify(path)
            except CheckpointError:
                continue
            if meta["epoch"] == epoch and checkpointing.LOCAL in meta["files"] and meta.get("rank") == ctx.rank:
                return path
    return None


def save_model(ctx, model) -> None:
    """model.h5 and saved_model/ (the original saved neither), atomically; the digest line of every worker."""
    if ctx.world > 1:
        print(f"rank {ctx.rank}/{ctx.world}: final weights sha256 {weights_digest(model.get_weights())}", flush=True)
    # under MultiWorkerMirroredStrategy every worker must save, in the same order (saving reads variables
    # through collectives); only the chief's copy is kept
    if ctx.is_chief:
        target = ctx.out
    else:
        target = ctx.rank_dir if ctx.keep_rank_files else ctx.scratch
    target.mkdir(parents=True, exist_ok=True)
    atomic_write(target / "model.h5", lambda tmp: model.save(tmp, save_format="h5", include_optimizer=False))
    atomic_write_dir(target / "saved_model", lambda tmp: model.save(tmp, save_format="tf", include_optimizer=False))
    if not ctx.is_chief and not ctx.keep_rank_files:
        shutil.rmtree(ctx.scratch, ignore_errors=True)
