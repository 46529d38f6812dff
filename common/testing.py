"""Helpers shared by the test suites and the ci tools (stdlib only, so every environment can import it).

Free ports for rendezvous, HCCL rank tables of this host, and the small noise datasets the tests train on.
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

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


def rank_table(ranks: int, servers: Sequence[str] = ("127.0.0.1",), rank_ids: Optional[Sequence[int]] = None) -> dict:
    """An HCCL rank table (version 1.0) with ``ranks`` devices on each of ``servers``.

    ``rank_ids`` overrides the rank ids in device order (a test of a damaged table passes duplicates).
    """
    server_list, n = [], 0
    for ip in servers:
        devices = []
        for d in range(ranks):
            rid = rank_ids[n] if rank_ids is not None else n
            devices.append({"device_id": str(d), "device_ip": f"192.98.{92 + len(server_list)}.{10 + d}",
                            "rank_id": str(rid)})
            n += 1
        server_list.append({"server_id": ip, "host_nic_ip": "reserve", "device": devices})
    return {"version": "1.0", "server_count": str(len(server_list)), "status": "completed",
            "server_list": server_list}


def write_rank_table(path, ranks: int, servers: Sequence[str] = ("127.0.0.1",),
                     rank_ids: Optional[Sequence[int]] = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rank_table(ranks, servers, rank_ids), indent=1) + "\n")
    return path


def make_noise(out, fmt: str = "cifar10", n_train: int = 48, n_test: int = 32, python: str = sys.executable,
               extra: Sequence[str] = ()) -> Path:
    """Random-noise data in ``fmt`` (comma-separated: cifar10, cifar100, imagenet) from ``ci/make_data.py``; returns ``out``."""
    cmd = [python, str(ROOT / "ci" / "make_data.py"), "--noise", "--out", str(out), "--formats", fmt,
           "--n_train", str(n_train), "--n_test", str(n_test), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode:
        raise RuntimeError(f"make_data.py --noise failed: {proc.stderr.strip()[-2000:]}")
    return Path(out)
