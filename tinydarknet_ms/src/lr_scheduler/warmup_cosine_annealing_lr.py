"""Cosine annealing by epoch after an optional linear warm-up.

As in the original, the cosine is not clipped at ``T_max``: with T_max 150 and 500 epochs the LR rises again
after epoch 150 (a period of 300 epochs).
"""
import math

import numpy as np

from .linear_warmup import linear_warmup_lr


def warmup_cosine_annealing_lr(lr, steps_per_epoch, warmup_epochs, max_epoch, T_max, eta_min=0):
    total_steps = int(max_epoch * steps_per_epoch)
    warmup_steps = int(warmup_epochs * steps_per_epoch)
    out = []
    for i in range(total_steps):
        if i < warmup_steps:
            out.append(linear_warmup_lr(i + 1, warmup_steps, lr, 0.0))
        else:
            epoch = i // steps_per_epoch
            out.append(eta_min + (lr - eta_min) * (1.0 + math.cos(math.pi * epoch / T_max)) / 2.0)
    return np.array(out, dtype=np.float32)
