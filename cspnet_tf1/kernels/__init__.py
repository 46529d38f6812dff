"""CPU kernels of the CSPNet recipe, compiled from source on first use and cached.

``bn_mish.cc`` holds the batch-axis normalisation + Mish of every conv block, forward and gradient
(``--bn_impl kernel``). TensorFlow's wheels carry the headers and the framework library to build custom
ops against, so the only other need is a C++17 compiler (``$CXX``, default g++). The build takes ~20 s
once per machine, TensorFlow version and source; the library is kept in ``$MODELZOO_KERNEL_CACHE``
(default ``$XDG_CACHE_HOME/modelzoo/kernels``), named by a hash of all of those, written to a temporary
name and renamed, under a file lock so that the ranks of a distributed run build it once.

The build targets the host (``-march=native``, or ``$MODELZOO_KERNEL_MARCH``) with the ISA features in
``DISABLED_FEATURES`` switched off, and falls back to the compiler's default target if that build fails,
so that no CPU can break it; ``tests/test_kernels.py`` compiles it for Intel and AMD targets on any host.
"""
import fcntl
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import tensorflow as tf

SOURCE = Path(__file__).with_name("bn_mish.cc")
EPSILON = 1e-3
_lib = None
_error = None


class KernelUnavailable(RuntimeError):
    """The kernel library could not be built or loaded; the message says why in one line."""


def cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(os.environ.get("MODELZOO_KERNEL_CACHE") or os.path.join(base, "modelzoo", "kernels"))


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return ""


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


def _compile(cmd):
    """None when ``cmd`` compiled, else the compiler's last line of output (or why it did not run)."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    if proc.returncode == 0:
        return None
    return (proc.stderr.strip().splitlines() or ["(no output)"])[-1]


def library_path():
    """Where the library for this source, TensorFlow, compiler and CPU is (or will be) cached."""
    cxx = os.environ.get("CXX", "g++")
    if shutil.which(cxx) is None:
        raise KernelUnavailable(f"no C++ compiler: {cxx!r} is not on PATH (set $CXX)")
    try:
        version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise KernelUnavailable(f"C++ compiler {cxx!r} does not run: {exc}") from None
    key = hashlib.sha256("\0".join([SOURCE.read_text(), tf.__version__, version, _cpu_flags(),
                                    " ".join(build_command(cxx, "out", host_march()))]).encode()).hexdigest()[:16]
    return cxx, cache_dir() / f"bn_mish-{key}.so"


def _build(cxx, path, damaged=None):
    """Compile to a temporary name and rename. ``damaged``: the inode of a cached file that failed to load."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another rank may be building it; wait, then use its result
        if path.exists() and (damaged is None or path.stat().st_ino != damaged):
            return
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".so.tmp", dir=path.parent)
        os.close(fd)
        try:
            # the host's target first; the compiler's default target if that fails (slower, but it builds)
            failed = _compile(build_command(cxx, tmp, host_march()))
            if failed is not None:
                if _compile(build_command(cxx, tmp, None)) is not None:
                    raise KernelUnavailable(f"building {SOURCE.name} with {cxx} failed: {failed}")
                print(f"{SOURCE.name}: the -march={host_march()} build failed ({failed}); built for the "
                      f"compiler's default target instead", file=sys.stderr, flush=True)
            os.chmod(tmp, 0o755)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def load():
    """The loaded op library (built first if needed); raises KernelUnavailable with the reason."""
    global _lib, _error
    if _lib is None and _error is None:
        try:
            cxx, path = library_path()
            if not path.exists():
                _build(cxx, path)
            try:
                _lib = tf.load_op_library(str(path))
            except (tf.errors.OpError, OSError):  # a damaged cache entry (truncated, foreign): build it again
                _build(cxx, path, damaged=path.stat().st_ino)
                _lib = tf.load_op_library(str(path))
        except KernelUnavailable as exc:
            _error = exc
        except (OSError, subprocess.SubprocessError, tf.errors.OpError) as exc:
            _error = KernelUnavailable(f"{SOURCE.name}: {type(exc).__name__}: {exc}".splitlines()[0])
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
