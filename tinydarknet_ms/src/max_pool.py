"""Tiny-DarkNet's 2x2 / stride-2 max-pool: the original nn.MaxPool2d, or compiled CPU kernels (``--max_pool``).

MindSpore's CPU MaxPoolGrad took 21% of the training step's op time (its profiler, batch 32, 224 px, 2-core
AMD EPYC), more than any convolution. ``kernels/max_pool_2x2.cc`` computes the same pool and gradient in
one pass over the maps, as two "aot" custom ops; it is built once per machine with the C++ compiler
(common/native.py) for the compiler's default x86-64 target, so no CPU's ISA can break the build (the loops
are memory-bound: a wider ISA gains nothing). ``auto`` uses it only on CPU, only when every pool is exact
(image size a multiple of 16) and the step is fp32, and only where a probe of this host finds it 10% faster
than nn.MaxPool2d (cached per host, in the ``cpu tuning:`` line and the run record). Same output; the
gradient goes to the first largest element of each window (ties: MindSpore's own kernel may pick another).
"""
import ctypes
from pathlib import Path

import numpy as np
import mindspore as ms
import mindspore.nn as nn
import mindspore.ops as ops

from common import cputune, native

SOURCE = Path(__file__).with_name("kernels") / "max_pool_2x2.cc"
CHOICES = ("auto", "kernel", "nn")
PROBE_SHAPE = (16, 32, 112, 112)  # the second pool's maps at batch 16 (224 px): a few ms per candidate


def build_commands(cxx):
    return [[cxx, "-std=c++17", "-O3", "-fPIC", "-shared", "-pthread", "-w", str(SOURCE), "-o", "OUT"]]


def _check(path):
    lib = ctypes.CDLL(path)
    lib.MaxPool2x2, lib.MaxPool2x2Grad  # noqa: B018 -- both symbols must be there
    return path


def library() -> str:
    """Path of the built kernel library; native.Unavailable (one line) when it cannot be built or loaded."""
    cxx, _ = native.compiler()
    return native.load_cached(SOURCE, "max_pool_2x2", build_commands(cxx), _check,
                              load_errors=(OSError, AttributeError))


class KernelMaxPool2x2(nn.Cell):
    """nn.MaxPool2d(2, 2) on float32 NCHW maps with even H and W, through the compiled kernels."""

    def __init__(self, path=None):
        super().__init__()
        path = path or library()
        grad = ops.Custom(f"{path}:MaxPool2x2Grad", out_shape=lambda x, dy: x, out_dtype=lambda x, dy: x,
                          func_type="aot")

        def bprop(x, out, dout):
            return (grad(x, dout),)
        self.pool = ops.Custom(f"{path}:MaxPool2x2", out_shape=lambda x: [x[0], x[1], x[2] // 2, x[3] // 2],
                               out_dtype=lambda x: x, func_type="aot", bprop=bprop)

    def construct(self, x):
        return self.pool(x)


def make(impl):
    if impl == "kernel":
        return KernelMaxPool2x2()
    if impl == "nn":
        return nn.MaxPool2d(kernel_size=2, stride=2, pad_mode="same")
    raise ValueError(f"max_pool must be 'kernel' or 'nn', got {impl!r}")


def _probe_step(impl, stack):
    class Loss(nn.Cell):
        def __init__(self):
            super().__init__()
            self.pool = make(impl)

        def construct(self, x):
            return self.pool(x).sum()
    step = ms.jit(ms.grad(Loss()))
    x = ms.Tensor(np.random.RandomState(0).randn(*PROBE_SHAPE).astype(np.float32))
    return lambda: step(x).asnumpy()


def resolve(choice, device_target, image_size, amp_level):
    """The pool Tiny-DarkNet uses (``kernel`` or ``nn``), recorded for the ``cpu tuning:`` line."""
    if choice not in CHOICES:
        raise ValueError(f"--max_pool must be one of {CHOICES}, got {choice!r}")
    if choice == "nn" or (choice == "auto" and device_target != "CPU"):
        cputune.record("max_pool", "nn", "user" if choice == "nn" else "rule",
                       note="--max_pool" if choice == "nn" else "auto: the original nn.MaxPool2d on Ascend/GPU")
        return "nn"
    why_not = ("not CPU" if device_target != "CPU" else
               f"image_size {image_size} is not a multiple of 16 (the last pools would pad)" if image_size % 16 else
               f"amp_level {amp_level}: the kernels are float32 only" if amp_level != "O0" else "")
    if why_not:
        if choice == "kernel":
            raise ValueError(f"--max_pool kernel cannot run here: {why_not}")
        cputune.record("max_pool", "nn", "rule", note=f"auto: {why_not}")
        return "nn"
    try:
        path = library()
    except native.Unavailable as exc:
        if choice == "kernel":
            raise ValueError(f"--max_pool kernel: {exc}") from None
        cputune.record("max_pool", "nn", "fallback", note=str(exc))
        return "nn"
    if choice == "kernel":
        cputune.record("max_pool", "kernel", "user", note="--max_pool")
        return "kernel"
    # the library's name carries a hash of its source, compiler and CPU: a new build is probed again
    return cputune.probe_steps("max_pool", ["nn", "kernel"], _probe_step, default="nn",
                               key=f"mindspore {ms.__version__}; {Path(path).name}; {PROBE_SHAPE}").choice
