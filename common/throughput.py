"""Steady-state throughput: warm-up / graph-compilation steps are timed but kept apart.

The Ascend scripts excluded the first epoch (CSPNet) or averaged the last ten iterations (mmcls) and
then truncated FPS to an integer; here the rule is explicit and the result stays a float.
"""
from __future__ import annotations

import time
from typing import Optional


class ThroughputMeter:
    """Accumulate (seconds, images, steps) per training step or group of steps.

    ``warmup_steps`` first steps of the run count as warm-up. ``world_size`` ranks each process
    ``images`` per step in lockstep (data parallel), so the global rate is the per-rank rate times
    ``world_size``. If the run had no step after warm-up, all steps are used and ``steady`` is False.
    """

    def __init__(self, batch_size: int, warmup_steps: int = 1, world_size: int = 1):
        if batch_size <= 0 or world_size <= 0 or warmup_steps < 0:
            raise ValueError("batch_size and world_size must be positive, warmup_steps non-negative")
        self.batch_size = batch_size
        self.world_size = world_size
        self.warmup_steps = warmup_steps
        self.warmup_seconds = 0.0
        self.warmup_images = 0
        self.warmup_steps_done = 0
        self.steady_seconds = 0.0
        self.steady_images = 0
        self.steady_steps = 0
        self._t0: Optional[float] = None
        self._steady_log = []  # (seconds, images, steps) per record() call after warm-up, for windows

    # -- recording ---------------------------------------------------------------------------
    def start(self) -> None:
        self._t0 = time.perf_counter()

    def stop(self, images: Optional[int] = None, steps: int = 1) -> float:
        if self._t0 is None:
            raise RuntimeError("ThroughputMeter.stop() without start()")
        dt = time.perf_counter() - self._t0
        self._t0 = None
        self.record(dt, images, steps)
        return dt

    def record(self, seconds: float, images: Optional[int] = None, steps: int = 1) -> None:
        """Add ``steps`` steps that took ``seconds`` in all and processed ``images`` per rank."""
        if steps <= 0:
            return
        images = self.batch_size * steps if images is None else images
        # a group of steps straddling the warm-up boundary is split pro rata
        warm = min(steps, max(0, self.warmup_steps - self.warmup_steps_done))
        warm_images = int(round(images * warm / steps))
        if warm:
            self.warmup_seconds += seconds * warm / steps
            self.warmup_images += warm_images
            self.warmup_steps_done += warm
        if steps > warm:
            self.steady_seconds += seconds * (steps - warm) / steps
            self.steady_images += images - warm_images
            self.steady_steps += steps - warm
            self._steady_log.append((seconds * (steps - warm) / steps, images - warm_images, steps - warm))

    # -- results -----------------------------------------------------------------------------
    @property
    def total_steps(self) -> int:
        return self.warmup_steps_done + self.steady_steps

    @property
    def steady(self) -> bool:
        return self.steady_steps > 0

    def _window(self):
        if self.steady:
            return self.steady_seconds, self.steady_images, self.steady_steps
        return self.warmup_seconds, self.warmup_images, self.warmup_steps_done

    @property
    def images_per_sec(self) -> float:
        """Global images/sec over steady-state steps, summed over ranks."""
        seconds, images, _ = self._window()
        return images * self.world_size / seconds if seconds > 0 else 0.0

    @property
    def sec_per_step(self) -> float:
        seconds, _, steps = self._window()
        return seconds / steps if steps else 0.0

    def window_rates(self, windows: int = 5) -> list:
        """Global images/sec of up to ``windows`` contiguous windows of the steady-state steps.

        The median of these is robust to one slow window (a checkpoint save, another process).
        """
        log = self._steady_log
        if not log:
            return []
        n = min(windows, len(log))
        bounds = [round(i * len(log) / n) for i in range(n + 1)]
        rates = []
        for a, b in zip(bounds, bounds[1:]):
            secs = sum(r[0] for r in log[a:b])
            imgs = sum(r[1] for r in log[a:b])
            if secs > 0:
                rates.append(imgs * self.world_size / secs)
        return rates

    def as_dict(self) -> dict:
        rates = self.window_rates()
        median = sorted(rates)[len(rates) // 2] if rates else 0.0
        return {"images_per_sec": self.images_per_sec, "sec_per_step": self.sec_per_step,
                "warmup_seconds": self.warmup_seconds, "warmup_steps": self.warmup_steps_done,
                "steady_steps": self.steady_steps, "steady": self.steady, "world_size": self.world_size,
                "window_images_per_sec": rates, "median_window_images_per_sec": median}


def sum_rates(per_rank_images_per_sec) -> float:
    """Global throughput when each rank measured its own rate (ranks not in lockstep)."""
    return float(sum(per_rank_images_per_sec))


def warmup_steps(steps_per_epoch: int, epochs: int, group: int = 1) -> int:
    """The one warm-up rule of every recipe: how many first steps ``ThroughputMeter`` keeps apart.

    With more than one epoch to run, the whole first epoch (the Ascend CSPNet script's ``warnup_time``: it holds
    graph compilation, the input pipeline's start and the allocator's growth). In a one-epoch run, the first
    fifth of it, at least 1 and at most 5 steps. ``group``: steps are recorded ``group`` at a time (MindSpore's
    sink size), so the warm-up is rounded up to whole groups.
    """
    if steps_per_epoch <= 0 or epochs <= 0 or group <= 0:
        raise ValueError("steps_per_epoch, epochs and group must be positive")
    if epochs > 1:
        return steps_per_epoch
    n = max(1, min(5, steps_per_epoch // 5))
    return -(-n // group) * group
