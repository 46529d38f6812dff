"""Per-step monitoring inside ``model.train``: loss, progress line and steady-state throughput."""
import math
import time

import numpy as np
from mindspore.train.callback import Callback


def _loss_value(outputs):
    if isinstance(outputs, (tuple, list)):
        outputs = outputs[0]
    return float(np.asarray(outputs.asnumpy() if hasattr(outputs, 'asnumpy') else outputs).mean())


class StepMonitor(Callback):
    """Times every ``step_end`` call into a ``ThroughputMeter``; in sink mode one call may cover several steps,
    counted from MindSpore's own step counter.

    The run's first step (graph compilation) is the meter's warm-up. Multi-size training compiles a second
    graph at its first small epoch: that step is kept out of the meter and reported as ``compile_seconds``.
    """

    def __init__(self, meter, progress, lr_of_step):
        super().__init__()
        self.meter, self.progress, self.lr_of_step = meter, progress, lr_of_step
        self._last_step_num = 0
        self.compile_seconds = 0.0
        self.shapes_seen = set()
        self.shape = None
        self.epoch, self.losses, self._t0 = 0, [], None
        self.step_in_epoch = 0
        self.global_step = 0

    def begin_epoch(self, epoch, shape, global_step):
        self.epoch, self.shape, self.losses, self.step_in_epoch = epoch, shape, [], 0
        self.global_step = global_step

    def on_train_begin(self, run_context):
        self._last_step_num = run_context.original_args().cur_step_num

    def step_begin(self, run_context):
        self._t0 = time.perf_counter()

    def step_end(self, run_context):
        dt = time.perf_counter() - self._t0
        cb = run_context.original_args()
        loss = _loss_value(cb.net_outputs)
        if not math.isfinite(loss):
            raise FloatingPointError(f"loss is {loss} at epoch {self.epoch} step {self.step_in_epoch + 1}; "
                                     "lower the learning rate or check the data")
        steps = max(1, cb.cur_step_num - self._last_step_num)
        self._last_step_num = cb.cur_step_num
        if self.shapes_seen and self.shape not in self.shapes_seen:
            self.compile_seconds += dt
        else:
            self.meter.record(dt, steps=steps)
        self.shapes_seen.add(self.shape)
        self.losses.append(loss)
        self.step_in_epoch += steps
        self.global_step += steps
        self.progress.update(self.epoch, self.step_in_epoch, loss, self.lr_of_step(self.global_step - 1), steps)

    @property
    def epoch_loss(self):
        return float(np.mean(self.losses)) if self.losses else float('nan')
