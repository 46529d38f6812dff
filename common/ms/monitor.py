"""The ``Model.train`` callback of both MindSpore recipes: step timing, the progress line, the ``step`` event."""
from __future__ import annotations

import math
import time
from typing import Callable, Optional

import numpy as np
from mindspore.train.callback import Callback

from common import events
from common.cli import RecipeError


class NonFiniteLossError(RecipeError, FloatingPointError):
    """The loss became inf/nan: an expected failure (exit 2 through ``common.cli``), raised from the callback."""


def loss_value(outputs) -> float:
    """The scalar loss of a train network's outputs (the loss, or a tuple led by it as under loss scaling)."""
    if isinstance(outputs, (tuple, list)):
        outputs = outputs[0]
    return float(np.asarray(outputs.asnumpy() if hasattr(outputs, "asnumpy") else outputs).mean())


class StepMonitor(Callback):
    """Times each ``step_end`` into ``meter`` (a ``common.throughput.ThroughputMeter``) and reports the step.

    In sink mode one ``step_end`` covers a whole sink; the number of steps it covered is read from MindSpore's
    own step counter, and the meter records the group at once.

    - ``progress``: a ``common.progress.Progress``; each step calls ``progress.update(epoch, step, loss, lr)``,
      which prints ``epoch E step S [done/total] loss L lr X ...`` every ``progress.every`` steps.
    - ``lr_of_step(i)``: the learning rate of global step ``i`` (from 0), for the progress line.
    - ``events_dir``: the run's output folder; a ``step`` event {epoch, step, global_step, loss} goes there at the
      cadence of the plain progress line (also on ranks whose progress printing is off), ``rank`` goes into it.
    - ``count_data_wait``: False times ``step_begin`` -> ``step_end`` (the device step); True times from the
      previous ``step_end`` (or the epoch's start), so waiting for the input pipeline counts too.
    - ``hint``: what the user can do about a non-finite loss (ends the :class:`NonFiniteLossError` message).

    Call :meth:`begin_epoch` before each ``model.train`` call of one epoch (the recipes pass ``initial_epoch``);
    without it, an epoch change seen by ``on_train_epoch_begin`` starts the epoch from the monitor's own count.
    A new ``graph_key`` (the multi-size model's input size) compiles a second graph: the first step under each
    key after the first is kept out of the meter and added to ``compile_seconds``.
    """

    def __init__(self, meter, progress, lr_of_step: Callable[[int], float], *, events_dir=None,
                 rank: Optional[int] = None, count_data_wait: bool = False,
                 hint: str = "lower the learning rate or check the data"):
        super().__init__()
        self.meter, self.progress, self.lr_of_step = meter, progress, lr_of_step
        self.events_dir, self.rank, self.count_data_wait, self.hint = events_dir, rank, count_data_wait, hint
        self.compile_seconds = 0.0
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.losses = []
        self.graph_key = None
        self._keys_seen = set()
        self._last_step_num = 0
        self._t0 = None
        self._done = 0  # steps seen by this monitor: the progress line's cadence counter

    # -- driven by the recipe's epoch loop ------------------------------------------------------------------
    def begin_epoch(self, epoch: int, global_step: int, graph_key=None) -> None:
        """Epoch ``epoch`` (from 1) starts after ``global_step`` steps; ``graph_key`` names its compiled graph."""
        self.epoch, self.global_step, self.graph_key = epoch, global_step, graph_key
        self.step_in_epoch, self.losses = 0, []

    @property
    def epoch_loss(self) -> float:
        """Mean loss of the epoch's steps (nan before the first)."""
        return float(np.mean(self.losses)) if self.losses else float("nan")

    @property
    def last_loss(self) -> float:
        return self.losses[-1] if self.losses else float("nan")

    # -- MindSpore callback hooks ----------------------------------------------------------------------------
    def on_train_begin(self, run_context):
        self._last_step_num = run_context.original_args().cur_step_num

    def on_train_epoch_begin(self, run_context):
        epoch = run_context.original_args().cur_epoch_num
        if epoch != self.epoch:
            self.begin_epoch(epoch, self.global_step, self.graph_key)
        self._t0 = time.perf_counter()

    def on_train_step_begin(self, run_context):
        if not self.count_data_wait:
            self._t0 = time.perf_counter()

    def on_train_step_end(self, run_context):
        now = time.perf_counter()
        dt = now - (self._t0 if self._t0 is not None else now)
        self._t0 = now
        cb = run_context.original_args()
        loss = loss_value(cb.net_outputs)
        if not math.isfinite(loss):
            raise NonFiniteLossError(f"loss is {loss} at epoch {self.epoch} step {self.step_in_epoch + 1}; "
                                     f"{self.hint}")
        steps = max(1, cb.cur_step_num - self._last_step_num)
        self._last_step_num = cb.cur_step_num
        self._time(dt, steps)
        self.losses.append(loss)
        self.step_in_epoch += steps
        self.global_step += steps
        self._done += steps
        self.progress.update(self.epoch, self.step_in_epoch, loss, self.lr_of_step(self.global_step - 1), steps)
        if self.events_dir is not None and self._due():
            events.emit(self.events_dir, "step", rank=self.rank, epoch=self.epoch, step=self.step_in_epoch,
                        global_step=self.global_step, loss=loss)

    # -- helpers ---------------------------------------------------------------------------------------------
    def _time(self, seconds: float, steps: int) -> None:
        if self._keys_seen and self.graph_key not in self._keys_seen:
            self.compile_seconds += seconds
        else:
            self.meter.record(seconds, steps=steps)
        self._keys_seen.add(self.graph_key)

    def _due(self) -> bool:
        # the plain (non-terminal) progress line's rule, counted here: Progress stops counting where it is disabled
        return self._done % self.progress.every == 0 or self._done == self.progress.total
