"""Per-step learning-rate arrays, as the original's ``src/lr_scheduler`` (fed to the optimiser as a Tensor)."""
from .linear_warmup import linear_warmup_lr
from .warmup_step_lr import warmup_step_lr, multi_step_lr, step_lr
from .warmup_cosine_annealing_lr import warmup_cosine_annealing_lr

__all__ = ["linear_warmup_lr", "warmup_step_lr", "multi_step_lr", "step_lr", "warmup_cosine_annealing_lr"]
