"""Helpers shared by the test suites and the ci tools (stdlib only, so every environment can import it).

Free ports for rendezvous, HCCL rank tables of this host, and the small noise datasets the tests train on.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from . import events
from .rank_table import rank_table, write_rank_table  # noqa: F401  (re-exported for the test suites)

ROOT = Path(__file__).resolve().parent.parent


def free_port(consecutive: int = 1) -> int:
    """A free TCP port on 127.0.0.1 whose ``consecutive - 1`` successors are free too (worker r uses port + r)."""
    for _ in range(100):
        socks = []
        try:
            first = socket.socket()
            socks.append(first)
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            for k in range(1, consecutive):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port + k))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {consecutive} consecutive free ports on 127.0.0.1")


def make_noise(out, fmt: str = "cifar10", n_train: int = 48, n_test: int = 32, python: str = sys.executable,
               extra: Sequence[str] = ()) -> Path:
    """Random-noise data in ``fmt`` (comma-separated: cifar10, cifar100, imagenet) from ``ci/make_data.py``; returns ``out``."""
    cmd = [python, str(ROOT / "ci" / "make_data.py"), "--noise", "--out", str(out), "--formats", fmt,
           "--n_train", str(n_train), "--n_test", str(n_test), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode:
        raise RuntimeError(f"make_data.py --noise failed: {proc.stderr.strip()[-2000:]}")
    return Path(out)


# --- multi-rank kill tests: one rank SIGKILLed after a checkpoint, the job's end, no process left behind ---

JOB_TAG = "MZ_TEST_JOB"  # an environment variable every process of a test's job inherits, orphans included


def bf16_case(value, id: str = "bf16"):
    """A ``pytest.mark.parametrize`` case that trains in bfloat16 on CPU: run where the CPU computes bf16 in hardware
    (AVX512_BF16 or AMX, ``cputune.native_bf16``), skipped with that reason elsewhere. There the frameworks emulate
    bf16 (oneDNN's reference kernels: about 100 s a ResNet-50 step at batch 4), far past any test budget, or refuse
    it (TensorFlow's oneDNN convolutions under an AVX2 cap)."""
    import pytest
    from .cputune import NO_NATIVE_BF16, native_bf16
    return pytest.param(value, id=id, marks=pytest.mark.skipif(
        not native_bf16(), reason=f"bf16 learning check: {NO_NATIVE_BF16}"))


def tag_job(env: dict) -> dict:
    """``env`` plus a unique ``JOB_TAG`` value: :func:`job_processes` finds the job's processes by it."""
    return {**env, JOB_TAG: f"{os.getpid()}-{time.monotonic_ns()}"}


def job_processes(env: dict, *markers: bytes) -> list:
    """Live (non-zombie) processes whose environment holds ``env``'s job tag and every ``markers`` entry."""
    tag = f"{JOB_TAG}={env[JOB_TAG]}".encode()
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            environ = (d / "environ").read_bytes().split(b"\0")
            state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and tag in environ and all(m in environ for m in markers):
            found.append(int(d.name))
    return found


def kill_rank_after_checkpoint(proc, events_dirs, rank: int, checkpoints: int = 1, timeout: float = 600,
                               poll: float = 0.2) -> dict:
    """SIGKILL rank ``rank`` of a running job once ``checkpoints`` checkpoints exist and it trains past them.

    Waits (reading ``events.jsonl`` in each of ``events_dirs``) until checkpoint events of ``checkpoints``
    distinct global steps are on record and ``rank`` has logged a step beyond the newest of them, then kills
    the process that logged that step. Returns that step event. Fails the test (AssertionError) when the job
    ends first or ``timeout`` seconds pass.
    """
    dirs = [events_dirs] if isinstance(events_dirs, (str, os.PathLike)) else list(events_dirs)
    deadline = time.monotonic() + timeout
    while True:
        found = [e for d in dirs for e in events.read(d)]
        saved = sorted({e["global_step"] for e in found if e["event"] == "checkpoint"})
        if len(saved) >= checkpoints:
            after = [e for e in found if e["event"] == "step" and e["rank"] == rank and e["global_step"] > saved[-1]]
            if after:
                os.kill(after[-1]["pid"], signal.SIGKILL)
                return after[-1]
        assert proc.poll() is None, f"the job ended (exit {proc.returncode}) before rank {rank} could be killed"
        assert time.monotonic() < deadline, (f"rank {rank} did not train past checkpoint {checkpoints} within "
                                             f"{timeout:.0f} s")
        time.sleep(poll)


def wait_job_gone(env: dict, grace: float = 30) -> None:
    """After the launcher exited: every process of the job must be gone within ``grace`` seconds."""
    deadline = time.monotonic() + grace
    while job_processes(env) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = job_processes(env)
    assert not left, f"processes of the failed job still running: {left}"


def kill_job(proc, env: dict) -> None:
    """Clean-up for a ``finally``: the launcher and every tagged process of its job, SIGKILLed."""
    for pid in job_processes(env):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if proc.poll() is None:
        proc.kill()
        proc.wait()


ALL_KILL_CASES = "MZ_ALL_KILL_CASES"


def kill_cases(cases: Sequence, default: int) -> list:
    """The multi-rank kill cases a suite runs: ``cases[default]`` in ``make test``, all with MZ_ALL_KILL_CASES=1.

    Each case is two multi-rank start-ups plus the launcher noticing the lost rank (2-4 min on 2 cores), so
    ``make test`` runs one per recipe, rank 0 killed in some recipes and rank 1 in the others (RELIABILITY.md
    lists which); ``MZ_ALL_KILL_CASES=1 make test`` runs every case of every recipe.
    """
    return list(cases) if os.environ.get(ALL_KILL_CASES) == "1" else [cases[default]]


def jpeg_segment(data: bytes, marker: int) -> int:
    """The offset of the first ``0xFF marker`` segment before the image data of a JPEG file's bytes."""
    pos = 2
    while data[pos + 1] != marker:
        if data[pos + 1] == 0xDA:
            raise ValueError(f"no segment 0x{marker:02X} before the image data")
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    return pos


def break_huffman_table(data: bytes) -> bytes:
    """A JPEG file's bytes with its first Huffman table's 16 code counts raised far past what the segment holds:
    the corruption that crashes MindSpore 2.10's decoder (SIGSEGV) instead of raising an error."""
    at = jpeg_segment(data, 0xC4) + 5
    return data[:at] + bytes(0xFF if k % 3 else 0x10 for k in range(16)) + data[at + 16:]


def pillow_decodes(data: bytes) -> bool:
    """Whether Pillow decodes an image file's bytes whole (the second opinion beside a framework's decoder)."""
    import io
    from PIL import Image
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
        return True
    except Exception:  # Pillow raises many types for bad data
        return False
