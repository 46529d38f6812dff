"""The TensorFlow recipes' multi-device launcher: one ``train.py`` per device that an HCCL rank table lists here.

Framework-free (stdlib and ``common.rank_table``): it builds each worker's command and environment, starts
them, echoes one rank's output, and supervises them. ``cspnet_tf1/launch.py`` and ``cutmix_tf2/src/launch.py``
are a few lines that name their ``train.py``, default port and Ascend test and call ``main`` here.

Flags (``build_parser``)::

    --rank_table=FILE      the HCCL rank table (required)
    --output_path=DIR      the job's output folder; worker r runs in DIR/rank_<r>/ and logs to train.log there
    --server_index=auto|N  this server's index in server_list; auto: the only one, or the one whose
                           server_id is an address of this host
    --device_num=N         the table must list exactly N devices
    --port=P               worker of rank r listens on <its server_id>:P+r (default: cspnet_tf1 29700,
                           cutmix_tf2 29600, so that both can run on one host at once)
    --device=auto|cpu|gpu|npu   passed on to train.py; also picks HCCL or TF_CONFIG (below)
    --grace=S              seconds between SIGTERM and SIGKILL when stopping workers (default 10)
    -- <train.py flags>

Environment of every worker (the launcher's own, plus)::

    RANK_TABLE_FILE   absolute path of the table          RANK_SIZE   number of ranks in the table
    RANK_ID           this worker's rank                   DEVICE_ID, ASCEND_DEVICE_ID   its device_id
    MZ_LAUNCHER_PID   the launcher's pid (a worker may exit when the launcher is gone, e.g. SIGKILLed)
    TF_CONFIG         {"cluster": {"worker": ["<server_id>:<port+r>" for every rank r]},
                       "task": {"type": "worker", "index": r}} -- not set on Ascend when the recipe's
                      all-reduce there is HCCL (then an inherited TF_CONFIG is removed too)
    CUDA_VISIBLE_DEVICES  the device_id, with TF_CONFIG and --device gpu or auto (one GPU per worker;
                      harmless without a GPU)

Supervision and its timings: rank 0's output goes to this launcher's stdout as well as to its train.log (the
other ranks' only to their train.log); the launcher polls every ``POLL_SECONDS`` (0.2 s); when a worker exits
non-zero it prints ``ERROR: rank R exited with C ...`` on stderr, stops the others (SIGTERM to every worker's
process group, the exited one's too; SIGKILL to those still running ``--grace`` seconds later) and exits with
that worker's status (128 + N for a worker killed by signal N). SIGTERM or SIGINT to the launcher stops the
workers the same way and it exits 128 + N. A bad table or flag value is one ``ERROR:`` line and exit 2,
before any worker starts.

    python launch.py --rank_table=rank_table.json --output_path=out [--server_index=auto] -- <train.py flags>
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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from common import cli
from common.rank_table import RankTable, RankTableError, load_rank_table

POLL_SECONDS = 0.2
GRACE_SECONDS = 10.0
ERRORS = (RankTableError,)  # the expected failures of ``main``: ``cli.run(main, errors=launch.ERRORS)``


# -- worker addressing (TF_CONFIG) and environment -----------------------------------------------------------
def worker_addresses(table: RankTable, port: int) -> List[str]:
    """``host:port`` of every rank, in rank order: the ``cluster.worker`` list of TF_CONFIG."""
    host = {d.rank_id: s.server_id for s in table.servers for d in s.devices}
    return [f"{host[r]}:{port + r}" for r in range(table.rank_size)]


def tf_config(workers: Sequence[str], rank: int) -> str:
    return json.dumps({"cluster": {"worker": list(workers)}, "task": {"type": "worker", "index": rank}})


def worker_env(table: RankTable, dev, device: str, workers: Optional[Sequence[str]],
               base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The environment of the worker on ``dev`` (a ``rank_table.Device``); no TF_CONFIG when ``workers`` is None."""
    env = {**(os.environ if base is None else base),
           "RANK_TABLE_FILE": str(Path(table.path).resolve()), "RANK_SIZE": str(table.rank_size),
           "RANK_ID": str(dev.rank_id), "DEVICE_ID": str(dev.device_id), "ASCEND_DEVICE_ID": str(dev.device_id),
           "MZ_LAUNCHER_PID": str(os.getpid())}
    env.pop("TF_CONFIG", None)
    if workers:
        env["TF_CONFIG"] = tf_config(workers, dev.rank_id)
        if device in ("gpu", "auto"):
            # MirroredStrategy would otherwise take every visible GPU in every worker
            env["CUDA_VISIBLE_DEVICES"] = str(dev.device_id)
    return env


# -- supervision ---------------------------------------------------------------------------------------------
@dataclass
class Worker:
    rank: int
    cmd: List[str]
    env: Dict[str, str]
    cwd: Path
    log: Path
    device: int = 0


def _echo(pipe, log_path, stream):
    with open(log_path, "w") as log:
        for line in iter(pipe.readline, ""):
            log.write(line)
            log.flush()
            stream.write(line)
            stream.flush()


def _start(w: Worker, echo: bool, stream):
    # own session: stopping a worker stops whatever it started too, and a terminal's Ctrl-C reaches only us
    if echo:
        p = subprocess.Popen(w.cmd, cwd=w.cwd, env=w.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, start_new_session=True)
        t = threading.Thread(target=_echo, args=(p.stdout, w.log, stream), daemon=True)
        t.start()
        return p, t
    with open(w.log, "w") as fh:
        return subprocess.Popen(w.cmd, cwd=w.cwd, env=w.env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True), None


def stop(procs, grace: float = GRACE_SECONDS) -> None:
    """SIGTERM to every worker's process group, SIGKILL to the groups of those still running ``grace`` s later.

    A worker that has exited is signalled too: what it started may still run in its group.
    """
    for p in procs:
        _killpg(p, signal.SIGTERM)
    deadline = time.time() + grace
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            _killpg(p, signal.SIGKILL)
            p.wait()


def _killpg(p, sig):
    try:
        os.killpg(p.pid, sig)
    except ProcessLookupError:  # the group is empty: the worker and all it started have exited
        pass


def _status(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _catch_signals(caught: list):
    """SIGTERM/SIGINT are noted in ``caught`` for the poll loop; returns the handlers to put back.

    Only the main thread may set handlers; elsewhere (a test calling ``supervise`` from a thread) none are set.
    """
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {s: signal.signal(s, lambda signum, _frame: caught.append(signum)) for s in (signal.SIGTERM, signal.SIGINT)}


def _wait(procs, caught, grace, poll) -> int:
    while not caught:
        failed = [(w, p.returncode) for w, p in procs if p.poll() not in (None, 0)]
        if failed:
            w, rc = failed[0]
            print(f"ERROR: rank {w.rank} exited with {rc}; stopping the other ranks (see {w.log})",
                  file=sys.stderr, flush=True)
            stop([p for _, p in procs], grace)
            return _status(rc)
        if all(p.returncode == 0 for _, p in procs):
            return 0
        time.sleep(poll)
    print(f"launch: signal {caught[0]}; stopping the ranks", file=sys.stderr, flush=True)
    stop([p for _, p in procs], grace)
    return 128 + caught[0]


def supervise(workers: Sequence[Worker], echo_rank: Optional[int] = 0, grace: float = GRACE_SECONDS,
              poll: float = POLL_SECONDS, stream=None) -> int:
    """Start ``workers``, wait for them; 0 when all exit 0, else the first failure's status (see the docstring)."""
    stream = sys.stdout if stream is None else stream
    procs, threads, caught = [], [], []
    previous = _catch_signals(caught)
    try:
        for w in workers:
            if caught:  # a signal while starting: start no more, stop those already running
                break
            w.log.parent.mkdir(parents=True, exist_ok=True)
            p, t = _start(w, w.rank == echo_rank, stream)
            procs.append((w, p))
            threads += [t] if t else []
            print(f"launch: rank {w.rank} device {w.device} pid {p.pid} log {w.log}", file=stream, flush=True)
        return _wait(procs, caught, grace, poll)
    except BaseException:  # a worker that could not start: leave none of the others behind
        stop([p for _, p in procs], grace)
        raise
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        for t in threads:  # the echoed rank's last lines, after it exited or was stopped
            t.join(5)


# -- the launcher's command line -------------------------------------------------------------------------------
def build_parser(description: str, port: int) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--rank_table", required=True, help="the HCCL rank table (JSON)")
    ap.add_argument("--output_path", required=True, help="output folder; worker r runs in <output_path>/rank_<r>")
    ap.add_argument("--server_index", default="auto", help="this server's index in server_list, or auto "
                    "(the only server, or the one whose server_id is an address of this host)")
    ap.add_argument("--device_num", type=cli.positive_int, default=None,
                    help="expected number of devices in the table")
    ap.add_argument("--port", type=cli.positive_int, default=port,
                    help=f"worker of rank r listens on <server_id>:port+r (default {port})")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu", "npu"],
                    help="passed on to train.py")
    ap.add_argument("--grace", type=float, default=GRACE_SECONDS,
                    help=f"seconds between SIGTERM and SIGKILL when stopping workers (default {GRACE_SECONDS:g})")
    ap.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then the flags for train.py")
    return ap


def parse_args(argv, description: str, port: int) -> argparse.Namespace:
    args = build_parser(description, port).parse_args(argv)
    args.train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    return args


def server_index(table: RankTable, value: str) -> int:
    if value == "auto":
        return 0 if table.server_count == 1 else table.find_server()
    if value.isdigit() and int(value) < table.server_count:
        return int(value)
    raise RankTableError(f"{table.path}: --server_index {value!r} is not auto or 0..{table.server_count - 1}")


def plan(args, train_script, hccl: bool) -> List[Worker]:
    """The workers of this server: ``train.py --output_path=<out> --device=<device> <train flags>`` each."""
    table = load_rank_table(args.rank_table, args.device_num)
    index = server_index(table, args.server_index)
    if args.port > 65536 - table.rank_size:
        raise RankTableError(f"{args.rank_table}: --port {args.port} leaves no room for {table.rank_size} ranks")
    addresses = None if hccl else worker_addresses(table, args.port)
    out = Path(args.output_path).resolve()
    print(f"launch: server {index} ({table.servers[index].server_id}) of {table.server_count}, "
          f"{len(table.devices_of(index))} of {table.rank_size} ranks here, "
          f"all-reduce by {'HCCL' if hccl else 'TensorFlow collectives over gRPC'}", flush=True)
    cmd = [sys.executable, str(train_script), f"--output_path={out}", f"--device={args.device}", *args.train_args]
    return [Worker(dev.rank_id, cmd, worker_env(table, dev, args.device, addresses), out / f"rank_{dev.rank_id}",
                   out / f"rank_{dev.rank_id}" / "train.log", dev.device_id) for dev in table.devices_of(index)]


def main(argv, *, train_script, port: int, description: str,
         use_hccl: Callable[[str], bool] = lambda device: False) -> int:
    """A recipe's launcher: ``use_hccl(device)`` says whether its workers all-reduce by HCCL (no TF_CONFIG)."""
    args = parse_args(argv, description, port)
    workers = plan(args, train_script, use_hccl(args.device))
    return supervise(workers, grace=args.grace)
