"""Multi-device launcher: one ``train.py`` process per device that an HCCL rank table lists for this server.

Elsewhere than on Ascend every worker gets a ``TF_CONFIG`` (cluster = every rank of the table, at
``<server_id>:<port + rank>``), which ``train.py`` turns into a ``tf.distribute.Server`` and TensorFlow's
collective all-reduce (``MultiWorkerMirroredStrategy`` in graph mode). On Ascend (``npu_bridge`` importable,
``--device`` npu or auto) the workers get no ``TF_CONFIG``: as the ModelZoo scripts do, each one has
``RANK_TABLE_FILE``, ``RANK_SIZE``, ``RANK_ID`` and ``DEVICE_ID`` and HCCL does the all-reduce.

Every worker runs in its own folder ``<output_path>/rank_<i>/`` and logs to ``train.log`` there; rank 0's
output is echoed here. When any worker exits non-zero the launcher stops the others (SIGTERM, then SIGKILL
after ``--grace`` seconds) and exits non-zero; it polls every 0.2 s.

    python launch.py --rank_table=rank_table.json --output_path=out [--server_index=auto] -- <train.py flags>
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from common.rank_table import RankTableError, load_rank_table

RECIPE = Path(__file__).resolve().parent
POLL_SECONDS = 0.2


def worker_addresses(table, port):
    """``host:port`` of every rank, in rank order: the ``cluster.worker`` list of TF_CONFIG."""
    host = {d.rank_id: s.server_id for s in table.servers for d in s.devices}
    return [f"{host[r]}:{port + r}" for r in range(table.rank_size)]


def use_hccl(device):
    return device in ("npu", "auto") and importlib.util.find_spec("npu_bridge") is not None


def worker_env(table, dev, device, workers):
    env = {**os.environ, "RANK_TABLE_FILE": str(Path(table.path).resolve()), "RANK_SIZE": str(table.rank_size),
           "RANK_ID": str(dev.rank_id), "DEVICE_ID": str(dev.device_id), "ASCEND_DEVICE_ID": str(dev.device_id),
           # lets the worker notice a launcher that died without stopping it (SIGKILL)
           "MZ_LAUNCHER_PID": str(os.getpid())}
    env.pop("TF_CONFIG", None)
    if workers:
        env["TF_CONFIG"] = json.dumps({"cluster": {"worker": workers},
                                       "task": {"type": "worker", "index": dev.rank_id}})
    if workers and device in ("gpu", "auto"):
        # one GPU per worker (harmless without one): MirroredStrategy would otherwise take every visible GPU
        env["CUDA_VISIBLE_DEVICES"] = str(dev.device_id)
    return env


def _echo(pipe, log_path):
    with open(log_path, "w") as log:
        for line in iter(pipe.readline, ""):
            log.write(line)
            log.flush()
            sys.stdout.write(line)
            sys.stdout.flush()


def stop(procs, grace):
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


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rank_table", required=True)
    ap.add_argument("--output_path", required=True)
    ap.add_argument("--server_index", default="auto", help="this server's index in server_list, or auto "
                    "(the server whose server_id is an address of this host)")
    ap.add_argument("--device_num", type=int, default=None, help="expected number of devices in the table")
    ap.add_argument("--port", type=int, default=29700, help="worker of rank r listens on <server_id>:port+r")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu", "npu"])
    ap.add_argument("--grace", type=float, default=10.0, help="seconds between SIGTERM and SIGKILL")
    ap.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then the flags for train.py")
    args = ap.parse_args(argv)
    args.train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        table = load_rank_table(args.rank_table, args.device_num)
        if args.server_index == "auto":
            index = 0 if table.server_count == 1 else table.find_server()
        elif args.server_index.isdigit() and int(args.server_index) < table.server_count:
            index = int(args.server_index)
        else:
            raise RankTableError(f"{args.rank_table}: --server_index {args.server_index!r} is not auto or "
                                 f"0..{table.server_count - 1}")
        if not 0 < args.port <= 65536 - table.rank_size:
            raise RankTableError(f"{args.rank_table}: --port {args.port} leaves no room for {table.rank_size} ranks")
    except RankTableError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    hccl = use_hccl(args.device)
    workers = None if hccl else worker_addresses(table, args.port)
    out = Path(args.output_path).resolve()
    print(f"launch: server {index} ({table.servers[index].server_id}) of {table.server_count}, "
          f"{len(table.devices_of(index))} of {table.rank_size} ranks here, "
          f"all-reduce by {'HCCL' if hccl else 'TensorFlow collectives over gRPC'}", flush=True)

    procs, threads = [], []
    for dev in table.devices_of(index):
        rank_dir = out / f"rank_{dev.rank_id}"
        rank_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, str(RECIPE / "train.py"), f"--output_path={out}", f"--device={args.device}",
               *args.train_args]
        env, log = worker_env(table, dev, args.device, workers), rank_dir / "train.log"
        # own session: the launcher can stop a worker together with anything it started
        if dev.rank_id == 0:
            p = subprocess.Popen(cmd, cwd=rank_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, start_new_session=True)
            threads.append(threading.Thread(target=_echo, args=(p.stdout, log), daemon=True))
            threads[-1].start()
        else:
            with open(log, "w") as fh:
                p = subprocess.Popen(cmd, cwd=rank_dir, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        print(f"launch: rank {dev.rank_id} device {dev.device_id} pid {p.pid} log {log}", flush=True)
        procs.append((dev.rank_id, p))

    def on_signal(signum, _frame):
        stop([p for _, p in procs], args.grace)
        sys.exit(128 + signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while True:
        failed = [(r, p.returncode) for r, p in procs if p.poll() not in (None, 0)]
        if failed:
            rank, rc = failed[0]
            print(f"ERROR: rank {rank} exited with {rc}; stopping the other ranks "
                  f"(see {out / f'rank_{rank}' / 'train.log'})", file=sys.stderr, flush=True)
            stop([p for _, p in procs], args.grace)
            return rc if rc > 0 else 1
        if all(p.poll() == 0 for _, p in procs):
            break
        time.sleep(POLL_SECONDS)
    for t in threads:
        t.join(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
