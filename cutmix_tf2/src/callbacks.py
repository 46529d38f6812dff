"""Keras callbacks: the original's TimeHistory, per-epoch checkpoints, CSV summary + curves, progress.

Keras fit owns the epoch loop (train.py: ``train``); these are the parts of each epoch the recipe adds: the
steps of train_one_epoch are timed (TimeHistory) and logged (ProgressLogger, with the ``step`` events), and
after validate (fit's ``validation_data``) come save_checkpoint (CheckpointSaver) and the summary row.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import tf_keras as keras

from common import events
from common.digest import weights_digest
from common.progress import Progress
from common.summary import EpochSummary, plot_curves
from src import checkpointing


class TimeHistory(keras.callbacks.Callback):
    """Times every training step into a ThroughputMeter and prints the original's line every ``log_steps``.

    Only step time counts: the clock restarts at each epoch's first batch, so evaluation and
    checkpointing between epochs never dilute examples/second.
    """

    def __init__(self, batch_size, log_steps, meter, stream=None):
        super().__init__()
        self.batch_size = batch_size
        self.log_steps = log_steps
        self.meter = meter
        self.stream = stream or sys.stdout
        self.global_steps = 0
        self._t = None
        self._window_seconds = 0.0
        self._window_start = 0
        self.epoch_seconds = 0.0
        self.epoch_steps = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._t = None
        self.epoch_seconds = 0.0
        self.epoch_steps = 0

    def on_train_batch_begin(self, batch, logs=None):
        if self._t is None:
            self._t = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        dt, self._t = now - self._t, now
        self.meter.record(dt)
        self.global_steps += 1
        self.epoch_seconds += dt
        self.epoch_steps += 1
        self._window_seconds += dt
        if self.global_steps % self.log_steps == 0:
            steps = self.global_steps - self._window_start
            print("TimeHistory: %.2f seconds, %.2f examples/second between steps %d and %d"
                  % (self._window_seconds, steps * self.batch_size / self._window_seconds,
                     self._window_start, self.global_steps), file=self.stream, flush=True)
            self._window_seconds, self._window_start = 0.0, self.global_steps

    @property
    def epoch_images_per_sec(self):
        return self.epoch_steps * self.batch_size / self.epoch_seconds if self.epoch_seconds else 0.0


def save_checkpoint(root, epochs_done, model, extra=None, keep=2, events_dir=None, strategy=None) -> Path:
    """``root/epoch_NNNN`` (weights + optimiser, the last ``keep`` kept); then the ``checkpoint`` event.

    The metadata gets the global step (the multi-worker resume agrees on it); ``strategy`` (a multi-worker
    job): the worker's own per-replica values go in too (checkpointing.local_state). The event carries the
    digest of all the weights (BatchNorm statistics included: their mean over the replicas), which at the last
    epoch are the final weights: the workers of a multi-worker job compare theirs through it.
    """
    step = int(model.optimizer.iterations.numpy())
    local = checkpointing.local_state(model, strategy) if strategy is not None else None
    path = checkpointing.save(root, epochs_done, model, {**(extra or {}), "global_step": step}, keep, local=local)
    if events_dir is not None:
        events.emit(events_dir, "checkpoint", path=str(path), epoch=epochs_done, global_step=step,
                    digest=weights_digest(model.get_weights()))
    return path


class CheckpointSaver(keras.callbacks.Callback):
    """save_checkpoint after every epoch; ``events_dir``: where its ``checkpoint`` events go (None: none)."""

    def __init__(self, root, extra=None, keep=2, events_dir=None, strategy=None):
        super().__init__()
        self.root, self.extra, self.keep, self.events_dir = Path(root), extra or {}, keep, events_dir
        self.strategy = strategy

    def on_epoch_end(self, epoch, logs=None):
        save_checkpoint(self.root, epoch + 1, self.model, self.extra, self.keep, self.events_dir, self.strategy)


class SummaryWriter(keras.callbacks.Callback):
    """One ``summary.csv`` row per epoch and a refreshed ``curves.png`` beside the checkpoints."""

    def __init__(self, output_dir, timer, resume=False, title="cutmix_tf2"):
        super().__init__()
        self.csv = Path(output_dir) / "summary.csv"
        self.png = Path(output_dir) / "curves.png"
        self.summary = EpochSummary(self.csv, resume=resume)
        self.timer, self.title = timer, title
        self._t0 = None

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.summary.add(epoch + 1, train_loss=_f(logs.get("loss")), eval_top1=_f(logs.get("val_accuracy")),
                         lr=_f(keras.backend.get_value(self.model.optimizer.learning_rate)),
                         images_per_sec=self.timer.epoch_images_per_sec, time_sec=time.perf_counter() - self._t0)
        plot_curves(self.csv, self.png, title=self.title, labels=[self.title])


class ProgressLogger(keras.callbacks.Callback):
    """common.progress: a live line on a terminal, a plain line every ``every`` steps in a log file.

    Under MultiWorkerMirroredStrategy tf-keras sums the per-replica values of the step logs (its "auto"
    reduction), so the loss there is ``replicas`` times the global mean (equal per-replica batches); it is
    divided back here. The epoch-end logs are the metrics' own cross-replica means and need nothing.

    A ``step`` event goes to ``events_dir`` with every line a log file gets; ``first_step``: the global step
    the run starts from (a resumed run's).
    """

    def __init__(self, total_steps, batch_size, every, replicas=1, events_dir=None, first_step=0):
        super().__init__()
        self.progress = Progress(total_steps, batch_size, every=every)
        self.epoch = 0
        self.replicas = replicas
        self.events_dir, self.first_step = events_dir, first_step

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch, logs=None):
        lr = _f(keras.backend.get_value(self.model.optimizer.learning_rate))
        loss = _f((logs or {}).get("loss", float("nan"))) / self.replicas
        self.progress.update(self.epoch, batch + 1, loss, lr)
        done = self.progress.done
        if self.events_dir is not None and (done % self.progress.every == 0 or done == self.progress.total):
            events.emit(self.events_dir, "step", epoch=self.epoch, step=batch + 1,
                        global_step=self.first_step + done, loss=loss)

    def on_epoch_end(self, epoch, logs=None):
        self.progress.end_epoch()


class StepEvents(keras.callbacks.Callback):
    """The ``step`` events of a worker other than the chief (which prints no progress), at the chief's cadence,
    so that a test or tool can tell how far each rank got (common.testing.kill_rank_after_checkpoint)."""

    def __init__(self, every, events_dir, first_step=0, replicas=1):
        super().__init__()
        self.every, self.events_dir, self.first_step, self.replicas = every, events_dir, first_step, replicas
        self.epoch, self.done = 0, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch, logs=None):
        self.done += 1
        if self.done % self.every == 0:
            loss = _f((logs or {}).get("loss", float("nan"))) / self.replicas
            events.emit(self.events_dir, "step", epoch=self.epoch, step=batch + 1,
                        global_step=self.first_step + self.done, loss=loss)


def _f(v):
    return None if v is None else float(v)


def make_callbacks(args, ctx, data, state, meter) -> list:
    """The callbacks of train.py's fit. Every worker times its steps and saves (in step: saving runs
    collectives), and says so in a ``checkpoint`` event with its weights' digest (so that the workers can be
    compared); the chief alone writes the summary and the progress lines with their ``step`` events."""
    timer = TimeHistory(data.global_batch, args.log_steps, meter)
    # world: the rank count that wrote it (a job of another count refuses it: common.resume.check_world)
    extra = {"seed": args.seed, "batch_size": args.batch_size, "cutmix": not args.no_cutmix, "world": ctx.world,
             "rank": ctx.rank}
    callbacks = [timer, CheckpointSaver(ctx.scratch, extra=extra, keep=args.keep_checkpoints, events_dir=ctx.out,
                                        strategy=ctx.strategy if ctx.world > 1 else None)]
    if not ctx.is_chief:
        callbacks.append(StepEvents(args.log_steps, ctx.out, first_step=state.global_step,
                                    replicas=ctx.strategy.num_replicas_in_sync))
    if ctx.is_chief:
        callbacks += [SummaryWriter(ctx.out, timer, resume=state.epoch > 0),
                      ProgressLogger(data.steps * (args.epochs - state.epoch), data.global_batch, args.log_steps,
                                     replicas=ctx.strategy.num_replicas_in_sync, events_dir=ctx.out,
                                     first_step=state.global_step)]
        if args.tensorboard:
            callbacks.append(keras.callbacks.TensorBoard(log_dir=str(ctx.out / "tensorboard")))
    return callbacks
