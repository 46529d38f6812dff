"""PyTorch pieces: dense matmul rate and exact FLOP counting of a training step (FlopCounterMode)."""
from __future__ import annotations

import time

import torch


def matmul_rate(n: int = 2048, reps: int = 20) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = 0.0
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b)
        best = max(best, 2 * n ** 3 * reps / (time.perf_counter() - t))
    return best


def train_step_flops(model, compute_loss) -> int:
    """FLOPs of ``compute_loss()`` + backward counted by torch.utils.flop_counter (matmuls, convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        compute_loss().backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def threads() -> dict:
    return {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()}
