"""Atomic file writes for checkpoints and records: temp file in the same directory, fsync, rename.

A run killed during a save leaves the previous file intact; a full disk gives one clear error and
keeps the last good checkpoint.
"""
from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Optional


class CheckpointError(RuntimeError):
    pass


# a writer that fails leaving less than this free ran out of space, whatever it says: frameworks report a
# full disk in their own words (torch.save: "unexpected pos ...", TensorFlow: ResourceExhaustedError)
_FULL_BELOW = 1 << 20
# what an interrupted atomic write leaves: ".<name>.<random>.tmp" (file or folder), plus the staging names
# frameworks derive from it (MindSpore writes "<tmp>.ckpt" through "<tmp>.tmp")
_TEMP = re.compile(r"^\..+\.tmp(\.ckpt|\.tmp)?$")


def _out_of_space(exc: BaseException, directory: Path) -> bool:
    seen, depth = exc, 0
    while seen is not None and depth < 20:  # the chain of causes, bounded: a hand-made chain may loop
        if getattr(seen, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "no space left" in str(seen).lower():
            return True
        seen, depth = seen.__cause__ or seen.__context__, depth + 1
    try:
        st = os.statvfs(directory)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < _FULL_BELOW


def _save_error(path: Path, exc: BaseException, what: str) -> Optional[CheckpointError]:
    """The one-line error for a failed save; None for a non-OS error on a disk with room (raised as it is)."""
    if _out_of_space(exc, path.parent):
        return CheckpointError(f"{path}: disk full while saving (no space left on device); the previous {what} "
                               f"was kept")
    if isinstance(exc, OSError):
        return CheckpointError(f"{path}: could not save ({exc.strerror or exc})")
    return None


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
    except Exception as exc:
        # judged before the temp file goes: removing it frees the space that shows the disk was full
        error = _save_error(path, exc, "file")
        _remove(tmp)
        if error is None:
            raise
        raise error from exc
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
    except Exception as exc:
        error = _save_error(path, exc, "checkpoint")
        shutil.rmtree(tmp, ignore_errors=True)
        if error is None:
            raise
        raise error from exc
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


def remove_stale_temps(directory, log=print) -> list:
    """Delete the temp files and folders that saves killed mid-write left in ``directory``; returns their paths.

    A SIGKILL skips the writer's clean-up, so each save cut short leaves a checkpoint-sized temp behind. Call
    this only where no other process can be saving into ``directory``: when a training run resumes, before
    it trains (never from eval or export, which may run beside a live training run).
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for p in sorted(directory.iterdir()):
        if not _TEMP.match(p.name):
            continue
        try:
            if p.is_dir():
                size = sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
                shutil.rmtree(p)
            else:
                size = p.stat().st_size
                p.unlink()
        except OSError:  # gone already (another rank cleaning the same folder) or not ours to remove
            continue
        removed.append(p)
        log(f"resume: removed {p} ({size / 1e6:.1f} MB), left by a save that was interrupted")
    return removed


def _mtime(p: Path) -> float:
    return p.stat().st_mtime if p.exists() else 0


def latest_valid(candidates: Iterable, is_valid: Callable[[Path], bool], log=print,
                 key: Callable[[Path], object] = _mtime) -> Optional[Path]:
    """Newest candidate that ``is_valid`` accepts; each rejected one is reported.

    "Newest" is the largest ``key``: pass the epoch/step a checkpoint's name carries wherever it has one. The
    default, the modification time, ties within the file system's granularity and changes when files are copied.
    """
    paths = sorted((Path(c) for c in candidates), key=key, reverse=True)
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
