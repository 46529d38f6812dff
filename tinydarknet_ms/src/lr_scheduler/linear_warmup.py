"""Linear warm-up from ``init_lr`` to ``base_lr`` over ``warmup_steps`` steps."""


def linear_warmup_lr(current_step, warmup_steps, base_lr, init_lr):
    """LR at ``current_step`` (1-based: the first warm-up step already moves away from ``init_lr``)."""
    return float(init_lr) + (float(base_lr) - float(init_lr)) * current_step / float(warmup_steps)
