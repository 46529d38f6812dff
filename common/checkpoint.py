"""Atomic file writes for checkpoints and records: temp file in the same directory, fsync, rename.

A run killed during a save leaves the previous file intact; a full disk gives one clear error and
keeps the last good checkpoint.
"""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Optional


class CheckpointError(RuntimeError):
    pass


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` to produce the file, then move it over ``path`` in one rename.

    ``write`` receives a path in the target directory; whatever it leaves there is removed on failure.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        # mkstemp makes the file owner-only; give the result the permissions a plain open() would
        os.chmod(tmp, 0o666 & ~_umask())
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise CheckpointError(f"{path}: disk full while saving; the previous file was kept") from exc
        raise CheckpointError(f"{path}: could not save ({exc.strerror or exc})") from exc
    except BaseException:
        _remove(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path, data: bytes) -> Path:
    def _w(tmp):
        with open(tmp, "wb") as fh:
            fh.write(data)
    return atomic_write(path, _w)


def atomic_write_text(path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_dir(path, write: Callable[[str], None]) -> Path:
    """Like atomic_write for a checkpoint that is a directory of files (SavedModel, TF Saver sets)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        write(str(tmp))
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise CheckpointError(f"{path}: disk full while saving; the previous checkpoint was kept") from exc
        raise CheckpointError(f"{path}: could not save ({exc.strerror or exc})") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(path.parent)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove(p) -> None:
    try:
        os.remove(p)
    except OSError:
        pass


def latest_valid(candidates: Iterable, is_valid: Callable[[Path], bool], log=print) -> Optional[Path]:
    """Newest candidate (by modification time) that ``is_valid`` accepts; each rejected one is reported."""
    paths = sorted((Path(c) for c in candidates), key=lambda p: p.stat().st_mtime if p.exists() else 0, reverse=True)
    for p in paths:
        try:
            ok = is_valid(p)
        except Exception as exc:  # a corrupt file may raise anything from a framework's reader
            ok = False
            log(f"resume: skipping {p}: unreadable ({type(exc).__name__}: {exc})")
            continue
        if ok:
            return p
        log(f"resume: skipping {p}: failed validation (truncated or corrupt)")
    return None
