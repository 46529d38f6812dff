"""Per-step learning rates: linear warm-up, then cosine annealing that is constant within an epoch."""
import math

import numpy as np


def warmup_cosine_annealing_lr(lr, steps_per_epoch, warmup_epochs, max_epoch, t_max, eta_min=0.0):
    """One value per step for ``max_epoch`` epochs.

    Warm-up: lr * (i + 1) / warmup_steps. Afterwards: eta_min + (lr - eta_min) * (1 + cos(pi * e / t_max)) / 2
    with e the epoch index, so runs longer than ``t_max`` epochs (160 vs 150 in the original) see the rate
    rise a little again after epoch ``t_max``, as in the original.
    """
    warmup_steps = int(warmup_epochs * steps_per_epoch)
    out = []
    for i in range(int(max_epoch * steps_per_epoch)):
        if i < warmup_steps:
            out.append(lr * (i + 1) / warmup_steps)
        else:
            epoch = i // steps_per_epoch
            out.append(eta_min + (lr - eta_min) * (1.0 + math.cos(math.pi * epoch / t_max)) / 2.0)
    return np.array(out, dtype=np.float32)
