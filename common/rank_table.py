"""HCCL rank-table reader: the one place that parses ``rank_table.json`` (originals.md section 6).

Schema (all values are strings)::

    {"version": "1.0", "server_count": "1",
     "server_list": [{"server_id": "10.0.0.1", "host_nic_ip": "reserve",
                      "device": [{"device_id": "0", "device_ip": "192.98.92.10", "rank_id": "0"}, ...]}],
     "status": "completed"}

Every problem is a ``RankTableError`` whose message is one line starting with the file name. The
command line form prints shell assignments for the launch scripts::

    eval "$(python -m common.rank_table rank_table.json --server_index auto --device_num 8)"
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

MAX_BYTES = 4 * 1024 * 1024  # a real table for 4096 devices is far below this


class RankTableError(ValueError):
    pass


@dataclass
class Device:
    device_id: int
    device_ip: str
    rank_id: int


@dataclass
class Server:
    server_id: str
    devices: List[Device] = field(default_factory=list)


@dataclass
class RankTable:
    path: str
    version: str
    servers: List[Server]
    status: str

    @property
    def rank_size(self) -> int:
        return sum(len(s.devices) for s in self.servers)

    @property
    def server_count(self) -> int:
        return len(self.servers)

    @property
    def master_index(self) -> int:
        """Index of the server that holds rank 0: it hosts the rendezvous."""
        for i, s in enumerate(self.servers):
            if any(d.rank_id == 0 for d in s.devices):
                return i
        raise RankTableError(f"{self.path}: no rank 0")  # unreachable after validation

    @property
    def master_addr(self) -> str:
        return self.servers[self.master_index].server_id

    def devices_of(self, server_index: int) -> List[Device]:
        return list(self.servers[server_index].devices)

    def rank_start(self, server_index: int) -> int:
        return min(d.rank_id for d in self.servers[server_index].devices)

    def find_server(self, addresses=None) -> int:
        """Index of the server whose ``server_id`` is one of this host's addresses."""
        addresses = set(local_addresses() if addresses is None else addresses)
        hits = [i for i, s in enumerate(self.servers) if s.server_id in addresses]
        if len(hits) == 1:
            return hits[0]
        if not hits:
            raise RankTableError(f"{self.path}: no server_id matches this host's addresses "
                                 f"({', '.join(sorted(addresses)) or 'none found'}); pass --server_index")
        raise RankTableError(f"{self.path}: several server_ids ({', '.join(self.servers[i].server_id for i in hits)}) "
                             "are addresses of this host; pass --server_index")


def _fail(path, msg):
    raise RankTableError(f"{path}: {msg}")


def _string(path, where, obj, key):
    if not isinstance(obj, dict) or key not in obj:
        _fail(path, f"missing key '{key}' in {where}")
    value = obj[key]
    if not isinstance(value, str):
        _fail(path, f"'{key}' in {where} must be a string, got {type(value).__name__}")
    return value


def _int_string(path, where, obj, key):
    value = _string(path, where, obj, key)
    if not value.isdigit() or len(value) > 9:
        _fail(path, f"'{key}' in {where} must be a non-negative integer string, got {value[:20]!r}")
    return int(value)


def parse_rank_table(data, path="<rank table>", device_num: Optional[int] = None) -> RankTable:
    if not isinstance(data, dict):
        _fail(path, "top level must be a JSON object")
    version = _string(path, "the table", data, "version")
    status = _string(path, "the table", data, "status")
    if status != "completed":
        _fail(path, f"status is {status[:20]!r}, expected 'completed' (the table generator did not finish)")
    server_count = _int_string(path, "the table", data, "server_count")
    servers_raw = data.get("server_list")
    if not isinstance(servers_raw, list):
        _fail(path, "missing key 'server_list' or it is not a list")
    if server_count != len(servers_raw):
        _fail(path, f"server_count is {server_count} but server_list has {len(servers_raw)} servers")
    if not servers_raw:
        _fail(path, "server_list is empty")
    servers, ranks, server_ids = [], {}, set()
    for si, s in enumerate(servers_raw):
        where = f"server_list[{si}]"
        sid = _string(path, where, s, "server_id")
        if not sid:
            _fail(path, f"empty server_id in {where}")
        if sid in server_ids:
            _fail(path, f"duplicate server_id {sid!r}")
        server_ids.add(sid)
        for k, v in s.items():
            if k != "device" and not isinstance(v, str):
                _fail(path, f"'{k}' in {where} must be a string, got {type(v).__name__}")
        devs_raw = s.get("device")
        if not isinstance(devs_raw, list) or not devs_raw:
            _fail(path, f"missing or empty 'device' list in {where}")
        devices, dev_ids = [], set()
        for di, d in enumerate(devs_raw):
            dwhere = f"{where}.device[{di}]"
            dev_id = _int_string(path, dwhere, d, "device_id")
            ip = _string(path, dwhere, d, "device_ip")
            rank = _int_string(path, dwhere, d, "rank_id")
            if dev_id in dev_ids:
                _fail(path, f"duplicate device_id {dev_id} on server {sid}")
            dev_ids.add(dev_id)
            if rank in ranks:
                _fail(path, f"duplicate rank_id {rank} ({ranks[rank]} and {dwhere})")
            ranks[rank] = dwhere
            devices.append(Device(dev_id, ip, rank))
        servers.append(Server(sid, devices))
    n = len(ranks)
    if sorted(ranks) != list(range(n)):
        missing = sorted(set(range(n)) - set(ranks))
        _fail(path, f"rank_ids must be 0..{n - 1}; missing {missing[:5]}")
    if device_num is not None and device_num != n:
        _fail(path, f"table lists {n} devices but --device_num is {device_num}")
    return RankTable(str(path), version, servers, status)


def load_rank_table(path, device_num: Optional[int] = None) -> RankTable:
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_BYTES:
            _fail(path, f"file is {size} bytes, larger than any rank table ({MAX_BYTES})")
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        _fail(path, "file not found")
    except IsADirectoryError:
        _fail(path, "is a directory, expected a JSON file")
    except (OSError, UnicodeDecodeError) as exc:
        _fail(path, f"cannot read ({getattr(exc, 'strerror', None) or exc})")
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        _fail(path, f"not valid JSON ({getattr(exc, 'msg', 'too deeply nested')} at line {getattr(exc, 'lineno', '?')})")
    return parse_rank_table(data, path, device_num)


def local_addresses() -> set:
    addrs = {"127.0.0.1", "localhost", socket.gethostname()}
    try:
        addrs.update(socket.gethostbyname_ex(socket.gethostname())[2])
    except OSError:
        pass
    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=5).stdout
        addrs.update(out.split())
    except (OSError, subprocess.SubprocessError):
        pass
    return addrs


def shell_assignments(table: RankTable, server_index: int) -> str:
    devs = table.devices_of(server_index)
    values = {
        "RANK_TABLE_FILE": os.path.abspath(table.path), "RANK_SIZE": table.rank_size,
        "SERVER_COUNT": table.server_count, "SERVER_INDEX": server_index, "MASTER_ADDR": table.master_addr,
        "MASTER_INDEX": table.master_index, "LOCAL_DEVICE_NUM": len(devs), "RANK_START": table.rank_start(server_index),
        "LOCAL_DEVICE_IDS": " ".join(str(d.device_id) for d in devs),
        "LOCAL_RANK_IDS": " ".join(str(d.rank_id) for d in devs),
    }
    import shlex
    return "\n".join(f"{k}={shlex.quote(str(v))}" for k, v in values.items())


def rank_table(ranks: int, servers: Sequence[str] = ("127.0.0.1",), rank_ids: Optional[Sequence[int]] = None) -> dict:
    """An HCCL rank table (version 1.0) with ``ranks`` devices on each of ``servers`` (the GPU scripts write one
    for this machine's devices; the tests build theirs with it).

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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Validate a rank table and print shell assignments for this server.")
    ap.add_argument("table")
    ap.add_argument("--server_index", default="auto", help="index into server_list, or 'auto' (match local addresses)")
    ap.add_argument("--device_num", type=int, default=None, help="expected total device count")
    args = ap.parse_args(argv)
    table = load_rank_table(args.table, args.device_num)
    if args.server_index == "auto":
        idx = 0 if table.server_count == 1 else table.find_server()
    else:
        try:
            idx = int(args.server_index)
        except ValueError:
            _fail(args.table, f"--server_index must be an integer or 'auto', got {args.server_index!r}")
        if not 0 <= idx < table.server_count:
            _fail(args.table, f"--server_index {idx} out of range (table has {table.server_count} servers)")
    print(shell_assignments(table, idx))
    return 0


if __name__ == "__main__":
    from common import cli
    cli.run(main, sys.argv[1:], errors=(RankTableError,))
