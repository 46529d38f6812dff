"""A restricted unpickler for CIFAR files: plain containers and numpy arrays, nothing else.

A pickle can name any importable callable and the standard unpickler will call it, so a data file
would otherwise be able to run code. Here ``find_class`` admits only the handful of numpy functions
that rebuild arrays and dtypes; everything else is refused before anything is imported.
"""
from __future__ import annotations

import importlib
import io
import pickle
from pathlib import Path

# (module, name) pairs numpy uses to pickle arrays, under both numpy 1.x and 2.x spellings.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}
MAX_BYTES = 1 << 30  # the largest official CIFAR file is ~160 MB


class UnsafePickleError(pickle.UnpicklingError):
    pass


def _latin1_encode(text, encoding="latin1", errors="strict"):
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "iso-8859-1"):
        raise UnsafePickleError(f"refused _codecs.encode with {type(text).__name__} / {encoding!r}")
    return text.encode("latin1")


class _Restricted(pickle.Unpickler):
    def __init__(self, fh, source: str):
        super().__init__(fh, encoding="latin1")
        self._source = source

    def find_class(self, module, name):
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode  # how Python 3 writes bytes under protocol 2
        if (module, name) not in _ALLOWED:
            raise UnsafePickleError(f"{self._source}: refused to load {module}.{name} "
                                    "(only plain containers and numpy arrays are allowed)")
        alt = module.replace("numpy._core", "numpy.core") if "._core" in module else module.replace("numpy.core", "numpy._core")
        for mod in (module, alt):
            try:
                return getattr(importlib.import_module(mod), name)
            except (ImportError, AttributeError):
                continue
        raise UnsafePickleError(f"{self._source}: numpy has no {module}.{name}")

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self._source}: persistent references are not allowed")


def loads(data: bytes, source: str = "<bytes>"):
    try:
        return _Restricted(io.BytesIO(data), source).load()
    except UnsafePickleError as exc:
        if str(exc).startswith(f"{source}: "):
            raise
        raise UnsafePickleError(f"{source}: {exc}") from None  # the refusals raised below find_class
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            OverflowError, MemoryError, RecursionError, UnicodeDecodeError, ImportError,
            SystemError) as exc:  # SystemError: numpy's dtype __setstate__ on a mutated state tuple
        detail = " ".join(str(exc).split())[:120]  # one line, whatever the exception says
        raise UnsafePickleError(f"{source}: corrupt or truncated pickle ({type(exc).__name__}: {detail})") from None


def load(path):
    """Load one pickle file through the restricted unpickler. Errors name the file."""
    p = Path(path)
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        raise FileNotFoundError(f"{p}: file not found") from None
    if size > MAX_BYTES:
        raise UnsafePickleError(f"{p}: {size} bytes is larger than any CIFAR file")
    return loads(p.read_bytes(), str(p))
