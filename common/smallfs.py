"""A small, real file system for disk-full tests: a tmpfs of a fixed size, so a save really hits ENOSPC.

    with small_tmpfs(8 << 20) as folder:   # 8 MiB; gone again after the block
        ...

As root (CI and these machines) the tmpfs is mounted with ``mount -t tmpfs`` and unmounted in a ``finally``.
Without root it is mounted inside a user + mount namespace (``unshare -rm``) kept open by a sleeping process
and reached through that process's ``/proc/<pid>/root``; it disappears with the process. When neither works,
``SmallFsError`` says why for both: a disk-full test must fail, not skip, when it cannot fill a disk.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator


class SmallFsError(RuntimeError):
    pass


def _run(cmd) -> str:
    """'' on success, else the first line the command printed."""
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=30)
    return "" if proc.returncode == 0 else (proc.stdout.strip().splitlines() or [f"exit {proc.returncode}"])[0]


def _check_size(folder: Path, size: int) -> None:
    st = os.statvfs(folder)
    total = st.f_blocks * st.f_frsize
    if not size <= total < size + (1 << 20):  # tmpfs rounds up to whole pages
        raise SmallFsError(f"{folder}: expected a {size}-byte file system, found {total} bytes")


@contextmanager
def _mounted(size: int) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="mz_small_fs_"))
    try:
        err = _run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)])
        if err:
            raise SmallFsError(f"mount -t tmpfs: {err}")
        try:
            _check_size(folder, size)
            yield folder
        finally:
            if _run(["umount", str(folder)]):
                _run(["umount", "-l", str(folder)])  # still busy (a child left running): detach it
    finally:
        folder.rmdir()


@contextmanager
def _in_namespace(size: int) -> Iterator[Path]:
    if shutil.which("unshare") is None:
        raise SmallFsError("unshare: not installed")
    folder = Path(tempfile.mkdtemp(prefix="mz_small_fs_"))
    holder = subprocess.Popen(["unshare", "-rm", "sh", "-c",
                               f'mount -t tmpfs -o size={size} tmpfs "$0" && echo mounted && exec sleep 86400',
                               str(folder)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first = holder.stdout.readline().strip()
        if first != "mounted":
            holder.wait(timeout=30)
            raise SmallFsError(f"unshare -rm: {first or f'exit {holder.returncode}'}")
        inside = Path(f"/proc/{holder.pid}/root") / folder.relative_to("/")
        _check_size(inside, size)
        yield inside
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
        folder.rmdir()


@contextmanager
def small_tmpfs(size: int, how: str = "auto") -> Iterator[Path]:
    """A folder on a fresh tmpfs of ``size`` bytes. ``how``: 'mount' (needs root), 'unshare' or 'auto'."""
    if how not in ("auto", "mount", "unshare"):
        raise ValueError(f"how={how!r}: expected auto, mount or unshare")
    reasons = []
    with ExitStack() as stack:
        for method, use in (("mount", _mounted), ("unshare", _in_namespace)):
            if how not in ("auto", method) or (method == "mount" and how == "auto" and os.geteuid() != 0):
                continue
            try:
                folder = stack.enter_context(use(size))
            except SmallFsError as exc:
                reasons.append(str(exc))
                continue
            yield folder
            return
    raise SmallFsError(f"cannot make a {size}-byte file system for a disk-full test: "
                       + "; ".join(reasons or ["not root, and unshare not asked for"]))
