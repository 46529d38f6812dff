"""Progress reporting: a live, rewritten line on a terminal; plain log lines otherwise.

Plain lines keep the original scripts' greps and the banner parsing working when output goes to a
log file.
"""
from __future__ import annotations

import sys
import time


def _fmt_eta(seconds: float) -> str:
    if seconds != seconds or seconds < 0 or seconds == float("inf"):
        return "--:--"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h:d}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    def __init__(self, total_steps: int, batch_size: int, stream=None, every: int = 50, enabled: bool = True):
        self.stream = stream or sys.stdout
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.total = max(1, total_steps)
        self.batch = batch_size
        self.every = max(1, every)
        self.enabled = enabled
        self.done = 0
        self.t0 = time.perf_counter()
        self._last_t, self._last_n = self.t0, 0
        self._rate = None  # img/s of the last measured window
        self._restart = False  # set by end_epoch: the next step opens a new rate window

    def update(self, epoch: int, step: int, loss: float, lr: float, steps: int = 1) -> None:
        if not self.enabled:
            return
        self.done += steps
        now = time.perf_counter()
        if self._restart:
            # the first step after an epoch ended: the time since the last step went to evaluation, checkpoints
            # and the next pass's start, not to training, so the rate is measured from here on (the ETA, from
            # the run's start, keeps that time)
            self._restart = False
            self._last_t, self._last_n = now, self.done
        if not self.tty and self.done % self.every and self.done != self.total:
            return
        if self.done > self._last_n:
            self._rate = (self.done - self._last_n) * self.batch / max(now - self._last_t, 1e-9)
            self._last_t, self._last_n = now, self.done
        eta = (now - self.t0) / self.done * (self.total - self.done)
        rate = "--" if self._rate is None else f"{self._rate:.1f}"
        line = (f"epoch {epoch} step {step} [{self.done}/{self.total}] loss {loss:.4f} lr {lr:.6g} "
                f"{rate} img/s ETA {_fmt_eta(eta)}")
        if self.tty:
            self.stream.write("\r\x1b[2K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def end_epoch(self) -> None:
        self._restart = True
        if self.tty and self.enabled:
            self.stream.write("\n")
            self.stream.flush()
