"""glibc malloc settings for CPU training: keep the memory of freed tensors for the next step.

glibc serves an allocation above its mmap threshold (128 KiB at start, raised dynamically when such a block is
freed) with a fresh ``mmap`` and returns it to the kernel on ``free``; memory at the top of the heap above the
trim threshold is returned too. A training step allocates and frees the same large activations and gradients
every step, so under these defaults every step pays page faults for memory it just gave back, and how much
depends on what the process happened to allocate and free before (the dynamic threshold). Measured on a 2-core
AMD EPYC (Zen 3): ResNet-50 at batch 16 spent 17.6 s (default state) vs 16.5 s (these settings) in
``run_backward`` over 12 steps, the whole run 51.9 s vs 48.0 s; with every large block mmapped (threshold
pinned at 128 KiB) 33.2 s, and a run whose earlier allocations left a different threshold was 4% slower than
another with the same training code. :func:`keep_freed_memory` pins the threshold at glibc's maximum (32 MiB)
and the trim threshold at 2 GiB, so that steady-state steps reuse heap memory.

Called at start by the recipes where it was measured (resnet50_cifar_pt). A user's own ``MALLOC_MMAP_THRESHOLD_``
or ``MALLOC_TRIM_THRESHOLD_`` wins; other C libraries (musl, macOS) are left alone. Recorded as a ``malloc``
decision in the ``cpu tuning:`` line and the run record.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

from . import cputune

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # <malloc.h>
MMAP_THRESHOLD = 32 * 1024 * 1024          # glibc's largest accepted value on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)
TRIM_THRESHOLD = 2 ** 31 - 1               # mallopt takes an int
ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def _mallopt():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.mallopt
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return fn


def keep_freed_memory() -> str:
    """Apply the settings in this process (future allocations); returns the recorded choice."""
    user = [k for k in ENV if k in os.environ]
    if user:
        return cputune.record("malloc", "user", "user", note=", ".join(f"{k}={os.environ[k]}" for k in user)).choice
    mallopt = _mallopt()
    if mallopt is None or not (mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        return cputune.record("malloc", "default", "rule", note="no glibc mallopt here").choice
    return cputune.record("malloc", "keep", "rule",
                          note="glibc mmap threshold 32 MiB, trim threshold 2 GiB: freed tensor memory is reused").choice
