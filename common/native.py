"""Native CPU kernels compiled from source on first use and cached per machine.

A recipe that keeps hand-written C++ beside its model builds it here: ``load_cached(...)`` compiles the
source to ``$MODELZOO_KERNEL_CACHE`` (default ``$XDG_CACHE_HOME/modelzoo/kernels``) under a name hashed from
the source, the compiler's version, the CPU flags and the build command, to a temporary name that is then
renamed, under a file lock so that the ranks of a distributed run build it once. A cached file that does not
load (truncated by a full disk, foreign) is built again. Every failure is one ``Unavailable`` line saying why,
so that the caller can fall back to the framework's own op and say so in its ``cpu tuning:`` line.
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
from typing import Callable, Optional, Sequence


class Unavailable(RuntimeError):
    """The library could not be built or loaded; the message says why in one line."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(os.environ.get("MODELZOO_KERNEL_CACHE") or os.path.join(base, "modelzoo", "kernels"))


def cpu_flags(path="/proc/cpuinfo") -> str:
    try:
        with open(path) as f:
            return next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return ""


def compiler() -> tuple:
    """(``$CXX`` or g++, its ``--version`` text); Unavailable when there is none or it does not run."""
    return _compiler(os.environ.get("CXX", "g++"))


@functools.lru_cache(maxsize=None)
def _compiler(cxx) -> tuple:
    # once per process and compiler: every cache lookup needs the version, and a failure is not cached
    if shutil.which(cxx) is None:
        raise Unavailable(f"no C++ compiler: {cxx!r} is not on PATH (set $CXX)")
    try:
        return cxx, subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise Unavailable(f"C++ compiler {cxx!r} does not run: {exc}".splitlines()[0]) from None


def run_compiler(cmd) -> Optional[str]:
    """None when ``cmd`` compiled, else the compiler's last line of output (or why it did not run)."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    if proc.returncode == 0:
        return None
    return (proc.stderr.strip().splitlines() or ["(no output)"])[-1]


def library_path(source: Path, stem: str, commands: Sequence[list], key: str = "") -> Path:
    """Where the library built from ``source`` by ``commands`` (with ``OUT`` as the output) is cached."""
    _, version = compiler()
    text = "\0".join([Path(source).read_text(), version, cpu_flags(), key, *(" ".join(c) for c in commands)])
    return cache_dir() / f"{stem}-{hashlib.sha256(text.encode()).hexdigest()[:16]}.so"


def build(source: Path, path: Path, commands: Sequence[list], damaged: Optional[int] = None,
          labels: Optional[Sequence[str]] = None) -> None:
    """Compile with the first of ``commands`` that works (``OUT`` in a command is the output file), atomically.

    ``damaged``: the inode of a cached file that failed to load (built again; another rank may have replaced
    it already). ``labels``: how to name each command in the line printed when the first one fails."""
    labels = labels or [f"with {' '.join(c[:4])} ..." for c in commands]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another rank may be building it; wait, then use its result
        if path.exists() and (damaged is None or path.stat().st_ino != damaged):
            return
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".so.tmp", dir=path.parent)
        os.close(fd)
        try:
            first = None
            for i, cmd in enumerate(commands):
                failed = run_compiler([tmp if a == "OUT" else a for a in cmd])
                if failed is None:
                    if i:
                        print(f"{Path(source).name}: the {labels[0]} build failed ({first}); built {labels[i]} "
                              f"instead", file=sys.stderr, flush=True)
                    break
                first = first or failed
            else:
                raise Unavailable(f"building {Path(source).name} failed: {first}")
            os.chmod(tmp, 0o755)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def load_cached(source: Path, stem: str, commands: Sequence[list], load: Callable[[str], object], key: str = "",
                load_errors=(OSError,), labels: Optional[Sequence[str]] = None):
    """``load(path)`` of the cached library, built first when missing or when the cached file does not load."""
    source = Path(source)
    try:
        path = library_path(source, stem, commands, key)
        if not path.exists():
            build(source, path, commands, labels=labels)
        try:
            return load(str(path))
        except load_errors:  # a damaged cache entry (truncated, foreign): build it again
            build(source, path, commands, damaged=path.stat().st_ino, labels=labels)
            return load(str(path))
    except Unavailable:
        raise
    except (OSError, subprocess.SubprocessError, *load_errors) as exc:
        raise Unavailable(f"{source.name}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
