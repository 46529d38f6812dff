"""Keras callbacks: the original's TimeHistory, per-epoch checkpoints, CSV summary + curves, progress."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import tf_keras as keras

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


class CheckpointSaver(keras.callbacks.Callback):
    """Writes ``checkpoints/epoch_NNNN`` after every epoch (weights + optimiser), keeping the last ``keep``."""

    def __init__(self, root, extra=None, keep=2):
        super().__init__()
        self.root, self.extra, self.keep = Path(root), extra or {}, keep

    def on_epoch_end(self, epoch, logs=None):
        checkpointing.save(self.root, epoch + 1, self.model, self.extra, self.keep)


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
    """

    def __init__(self, total_steps, batch_size, every, replicas=1):
        super().__init__()
        self.progress = Progress(total_steps, batch_size, every=every)
        self.epoch = 0
        self.replicas = replicas

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch, logs=None):
        lr = _f(keras.backend.get_value(self.model.optimizer.learning_rate))
        loss = _f((logs or {}).get("loss", float("nan")))
        self.progress.update(self.epoch, batch + 1, loss / self.replicas, lr)

    def on_epoch_end(self, epoch, logs=None):
        self.progress.end_epoch()


def _f(v):
    return None if v is None else float(v)
