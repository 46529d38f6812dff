"""Multi-device launcher: one ``train.py`` worker per device of this server, from an HCCL rank table.

Each worker gets ``TF_CONFIG`` (the cluster = every rank of the table, at ``<server_id>:<port + rank>``)
for ``tf.distribute.MultiWorkerMirroredStrategy``, plus the Ascend variables ``RANK_TABLE_FILE``,
``RANK_SIZE``, ``RANK_ID`` and ``DEVICE_ID``; on a GPU machine ``CUDA_VISIBLE_DEVICES`` is the device id.
Logs go to ``<output_path>/rank_<i>/train.log``; rank 0's is echoed here. When any worker exits non-zero
the others are stopped (SIGTERM, then SIGKILL after ``--grace`` seconds) and the launcher exits non-zero.

    python -m src.launch --rank_table=rank_table.json --output_path=out [--server_index=auto] -- <train.py flags>
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from common.rank_table import RankTableError, load_rank_table

RECIPE_DIR = Path(__file__).resolve().parents[1]


def worker_addresses(table, port):
    by_rank = {d.rank_id: s.server_id for s in table.servers for d in s.devices}
    return [f"{by_rank[r]}:{port + r}" for r in range(table.rank_size)]


def _echo(pipe, log_path, stream):
    with open(log_path, "w") as log:
        for line in iter(pipe.readline, ""):
            log.write(line)
            log.flush()
            stream.write(line)
            stream.flush()


def _stop(procs, grace):
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.time() + grace
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rank_table", required=True)
    ap.add_argument("--output_path", required=True)
    ap.add_argument("--server_index", default="auto", help="this server's index in server_list, or auto")
    ap.add_argument("--device_num", type=int, default=None, help="expected number of devices in the table")
    ap.add_argument("--port", type=int, default=29600, help="worker r listens on port + r")
    ap.add_argument("--grace", type=float, default=10.0, help="seconds between SIGTERM and SIGKILL")
    ap.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then the flags for train.py")
    args = ap.parse_args(argv)
    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    try:
        table = load_rank_table(args.rank_table, args.device_num)
        index = (0 if table.server_count == 1 else table.find_server()) if args.server_index == "auto" \
            else int(args.server_index)
        if not 0 <= index < table.server_count:
            raise RankTableError(f"{args.rank_table}: --server_index {index} out of range")
    except (RankTableError, ValueError) as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    workers = worker_addresses(table, args.port)
    out = Path(args.output_path).resolve()
    procs, threads = [], []
    for dev in table.devices_of(index):
        rank_dir = out / f"rank_{dev.rank_id}"
        rank_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "RANK_TABLE_FILE": str(Path(args.rank_table).resolve()), "RANK_SIZE": str(table.rank_size),
               "RANK_ID": str(dev.rank_id), "DEVICE_ID": str(dev.device_id), "ASCEND_DEVICE_ID": str(dev.device_id),
               "TF_CONFIG": json.dumps({"cluster": {"worker": workers},
                                        "task": {"type": "worker", "index": dev.rank_id}})}
        if os.environ.get("MZ_DEVICE", "auto") == "gpu":
            env["CUDA_VISIBLE_DEVICES"] = str(dev.device_id)
        cmd = [sys.executable, str(RECIPE_DIR / "train.py"), f"--output_path={out}", *train_args]
        log = rank_dir / "train.log"
        if dev.rank_id == 0:
            p = subprocess.Popen(cmd, cwd=rank_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, start_new_session=True)
            t = threading.Thread(target=_echo, args=(p.stdout, log, sys.stdout), daemon=True)
            t.start()
            threads.append(t)
        else:
            with open(log, "w") as fh:
                p = subprocess.Popen(cmd, cwd=rank_dir, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        print(f"launch: rank {dev.rank_id} device {dev.device_id} pid {p.pid} log {log}", flush=True)
        procs.append((dev.rank_id, p))
    signal.signal(signal.SIGTERM, lambda *_: (_stop([p for _, p in procs], args.grace), sys.exit(143)))
    try:
        while True:
            failed = [(r, p.returncode) for r, p in procs if p.poll() not in (None, 0)]
            if failed:
                rank, rc = failed[0]
                print(f"ERROR: rank {rank} exited with {rc}; stopping the other ranks "
                      f"(see {out / f'rank_{rank}' / 'train.log'})", file=sys.stderr, flush=True)
                _stop([p for _, p in procs], args.grace)
                return rc if rc > 0 else 1
            if all(p.poll() == 0 for _, p in procs):
                break
            time.sleep(0.2)
    except KeyboardInterrupt:
        _stop([p for _, p in procs], args.grace)
        return 130
    for t in threads:
        t.join(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
