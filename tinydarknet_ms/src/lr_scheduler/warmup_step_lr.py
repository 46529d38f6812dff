"""Step decay: multiply by ``gamma`` at the first step of each milestone epoch, after an optional warm-up.

The original's ``lr_scheduler: exponential`` is this schedule (milestones 70/140/210/280, gamma 0.3).
"""
from collections import Counter

import numpy as np

from .linear_warmup import linear_warmup_lr


def warmup_step_lr(lr, lr_epochs, steps_per_epoch, warmup_epochs, max_epoch, gamma=0.1):
    total_steps = int(max_epoch * steps_per_epoch)
    warmup_steps = int(warmup_epochs * steps_per_epoch)
    decays_at = Counter(int(e * steps_per_epoch) for e in lr_epochs)  # a repeated milestone decays twice
    out, cur = [], float(lr)
    for i in range(total_steps):
        if i < warmup_steps:
            cur = linear_warmup_lr(i + 1, warmup_steps, lr, 0.0)
        else:
            cur *= gamma ** decays_at[i]
        out.append(cur)
    return np.array(out, dtype=np.float32)


def multi_step_lr(lr, milestones, steps_per_epoch, max_epoch, gamma=0.1):
    return warmup_step_lr(lr, milestones, steps_per_epoch, 0, max_epoch, gamma=gamma)


def step_lr(lr, epoch_size, steps_per_epoch, max_epoch, gamma=0.1):
    """Decay every ``epoch_size`` epochs."""
    return multi_step_lr(lr, range(epoch_size, max_epoch, epoch_size), steps_per_epoch, max_epoch, gamma=gamma)
