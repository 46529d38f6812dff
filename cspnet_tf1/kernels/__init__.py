"""CPU kernels of the CSPNet recipe, compiled from source on first use and cached.

``bn_mish.cc`` holds the batch-axis normalisation + Mish of every conv block, forward and gradient
(``--bn_impl kernel``). TensorFlow's wheels carry the headers and the framework library to build custom
ops against, so the only other need is a C++17 compiler (``$CXX``, default g++). The build takes ~20 s
once per machine, TensorFlow version and source; the library is kept in ``$MODELZOO_KERNEL_CACHE``
(default ``$XDG_CACHE_HOME/modelzoo/kernels``), named by a hash of all of those, written to a temporary
name and renamed, under a file lock so that the ranks of a distributed run build it once (common/native.py).

The build targets the host (``-march=native``, or ``$MODELZOO_KERNEL_MARCH``) with the ISA features in
``DISABLED_FEATURES`` switched off, and falls back to the compiler's default target if that build fails,
so that no CPU can break it; ``tests/test_kernels.py`` compiles it for Intel and AMD targets on any host.
"""
import functools
import os
import subprocess
from pathlib import Path

import tensorflow as tf

from common import native

SOURCE = Path(__file__).with_name("bn_mish.cc")
EPSILON = 1e-3
KEY = f"tensorflow {tf.__version__}"  # the library links against this TensorFlow: part of its cache name
_lib = None
_error = None


# the kernel library could not be built or loaded; the message says why in one line
KernelUnavailable = native.Unavailable


# ISA features switched off whatever the target. avx512fp16 (Sapphire Rapids and later Intel CPUs): the
# headers of TensorFlow's bundled Eigen (arch/AVX512/PacketMathFP16.h) do not compile under g++ 12 when it is
# on ("expected initializer before '<'" at predux_half_dowto4), and the kernel has no half-precision math.
DISABLED_FEATURES = ("avx512fp16",)


@functools.lru_cache(maxsize=None)
def _compiler_accepts(cxx, flag):
    """Whether ``cxx`` knows ``flag`` (a compiler too old to know a feature cannot turn it on either)."""
    try:
        return subprocess.run([cxx, flag, "-x", "c++", "-fsyntax-only", "-"], input="", capture_output=True,
                              text=True, timeout=60).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def target_flags(cxx, march):
    """The code-generation flags for ``-march=march`` (None: the compiler's default target)."""
    if march is None:
        return []
    return [f"-march={march}"] + [f"-mno-{feature}" for feature in DISABLED_FEATURES
                                  if _compiler_accepts(cxx, f"-mno-{feature}")]


def host_march():
    # native: Eigen's exp/rsqrt vectorise at the machine's width; the cache key includes the CPU flags
    return os.environ.get("MODELZOO_KERNEL_MARCH") or "native"


def build_command(cxx, output, march, shared=True):
    """The compile command for ``march``; ``shared=False`` compiles an object file only (the target tests)."""
    return ([cxx, "-std=c++17", "-O3", *target_flags(cxx, march), "-fPIC", "-shared" if shared else "-c", "-w",
             str(SOURCE), "-o", str(output)]
            + tf.sysconfig.get_compile_flags() + (tf.sysconfig.get_link_flags() if shared else []))


def _commands(cxx):
    # the host's target first; the compiler's default target if that fails (slower, but it builds)
    return [build_command(cxx, "OUT", host_march()), build_command(cxx, "OUT", None)]


def _labels():
    return [f"-march={host_march()}", "for the compiler's default target"]


def library_path():
    """(compiler, where the library for this source, TensorFlow, compiler and CPU is or will be cached)."""
    cxx, _ = native.compiler()
    return cxx, native.library_path(SOURCE, "bn_mish", _commands(cxx), key=KEY)


def load():
    """The loaded op library (built first if needed); raises KernelUnavailable with the reason."""
    global _lib, _error
    if _lib is None and _error is None:
        try:
            cxx, _ = native.compiler()
            _lib = native.load_cached(SOURCE, "bn_mish", _commands(cxx), tf.load_op_library,
                                      key=KEY, labels=_labels(),
                                      load_errors=(tf.errors.OpError, OSError))
        except KernelUnavailable as exc:
            _error = exc
    if _error is not None:
        raise _error
    return _lib


def available():
    """(True, "") when the kernels load on this machine, else (False, reason)."""
    try:
        load()
        return True, ""
    except KernelUnavailable as exc:
        return False, str(exc)


def batch_norm_mish(x):
    """mish(batch-axis normalisation of x) in one kernel; its gradient is one kernel too."""
    return load().modelzoo_batch_norm_mish(x, epsilon=EPSILON)[0]


@tf.RegisterGradient("ModelzooBatchNormMish")
def _batch_norm_mish_grad(op, dz, _dmean, _drstd):
    # mean and rstd are saved statistics, not outputs anyone differentiates: only z's gradient flows
    return load().modelzoo_batch_norm_mish_grad(dz, op.inputs[0], op.outputs[1], op.outputs[2])
