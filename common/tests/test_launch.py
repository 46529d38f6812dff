"""common/launch.py with small Python workers (no TensorFlow): exit codes, echo, stopping, addressing.

Each test runs a launcher like the recipes' (a few lines calling ``launch.main``) on ``worker.py`` below, which
records its arguments and environment in ``<rank dir>/env.json`` once it is up.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common import launch
from common.rank_table import load_rank_table
from common.testing import free_port, write_rank_table

ROOT = Path(__file__).resolve().parents[2]

WORKER = r'''
import glob, json, os, signal, subprocess, sys, time
rank = int(os.environ["RANK_ID"])
flags = dict(a[2:].split("=", 1) for a in sys.argv[1:])
mode, up = flags.get("mode", "ok"), int(flags.get("ranks", "0"))
if mode == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
# something the worker started, in its process group: stopping the worker must stop it too
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
keys = ["RANK_TABLE_FILE", "RANK_SIZE", "RANK_ID", "DEVICE_ID", "ASCEND_DEVICE_ID", "MZ_LAUNCHER_PID",
        "TF_CONFIG", "CUDA_VISIBLE_DEVICES"]
record = {"argv": sys.argv[1:], "cwd": os.getcwd(), "pid": os.getpid(), "child": child.pid,
          "env": {k: os.environ.get(k) for k in keys}}
with open("env.json.tmp", "w") as fh:
    json.dump(record, fh)
os.replace("env.json.tmp", "env.json")
print(f"hello from rank {rank}", flush=True)
while len(glob.glob(os.path.join(flags["output_path"], "rank_*", "env.json"))) < up:
    time.sleep(0.05)
if mode == "ok" or (mode == "fail" and rank == int(flags["fail_rank"])):
    child.kill()
    print(f"rank {rank} done", flush=True)
    sys.exit(int(flags.get("code", "0")))
if mode == "killed" and rank == int(flags["fail_rank"]):
    os.kill(os.getpid(), signal.SIGKILL)
time.sleep(600)
'''

LAUNCHER = '''
import functools, sys
from common import cli, launch
if __name__ == "__main__":
    cli.run(functools.partial(launch.main, train_script={script!r}, port=29700, description="test launcher"),
            sys.argv[1:], errors=launch.ERRORS)
'''


@pytest.fixture
def job(tmp_path):
    (tmp_path / "worker.py").write_text(WORKER)
    (tmp_path / "launcher.py").write_text(LAUNCHER.format(script=str(tmp_path / "worker.py")))
    return tmp_path


def _cmd(job, table, *train_flags, launch_flags=()):
    return [sys.executable, str(job / "launcher.py"), f"--rank_table={table}", f"--output_path={job / 'out'}",
            "--device=cpu", f"--port={free_port(4)}", *launch_flags, "--", *train_flags]


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _run(job, table, *train_flags, launch_flags=(), timeout=120):
    return subprocess.run(_cmd(job, table, *train_flags, launch_flags=launch_flags), env=_env(),
                          capture_output=True, text=True, timeout=timeout)


def _records(job, ranks):
    return {r: json.loads((job / "out" / f"rank_{r}" / "env.json").read_text()) for r in ranks}


def _wait_up(job, ranks, proc, seconds=60):
    deadline = time.time() + seconds
    while not all((job / "out" / f"rank_{r}" / "env.json").exists() for r in ranks):
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "workers did not start"
        time.sleep(0.05)
    return _records(job, ranks)


def _running(pid):
    """Whether ``pid`` still runs (a zombie, exited but not yet reaped by its new parent, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _alive_pids(records, settle=2.0):
    """The workers and their children still running ``settle`` s after the launcher exited (none expected)."""
    pids = [pid for rec in records.values() for pid in (rec["pid"], rec["child"])]
    deadline = time.time() + settle
    while any(map(_running, pids)) and time.time() < deadline:
        time.sleep(0.05)
    return [pid for pid in pids if _running(pid)]


def _cleanup(records):
    for pid in _alive_pids(records, settle=0):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_all_workers_succeed_exit_0_rank0_echoed(job):
    table = write_rank_table(job / "rank_table.json", 3)
    proc = _run(job, table, "--ranks=3", "--seed=1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "hello from rank 0" in proc.stdout and "rank 0 done" in proc.stdout
    assert "hello from rank 1" not in proc.stdout and "hello from rank 2" not in proc.stdout
    for r in range(3):
        log = (job / "out" / f"rank_{r}" / "train.log").read_text()
        assert f"hello from rank {r}" in log and f"rank {r} done" in log
        assert f"launch: rank {r} device {r} pid " in proc.stdout
    records = _records(job, range(3))
    out = str((job / "out").resolve())
    assert records[1]["argv"] == [f"--output_path={out}", "--device=cpu", "--ranks=3", "--seed=1"]
    assert records[1]["cwd"] == str(job / "out" / "rank_1")


def test_a_worker_exiting_3_stops_the_others_and_the_launcher_exits_3(job):
    table = write_rank_table(job / "rank_table.json", 3)
    proc = subprocess.Popen(_cmd(job, table, "--ranks=3", "--mode=fail", "--fail_rank=1", "--code=3",
                                 launch_flags=["--grace=60"]),
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    records = {}
    try:
        records = _wait_up(job, range(3), proc)
        t0 = time.time()
        out, err = proc.communicate(timeout=60)
        # the others stop on SIGTERM at once: well before --grace would let SIGKILL end them
        assert proc.returncode == 3 and time.time() - t0 < 10, out + err
        assert "ERROR: rank 1 exited with 3" in err and str(job / "out" / "rank_1" / "train.log") in err
        assert _alive_pids(records) == [], "a worker or what it started outlived the launcher"
    finally:
        proc.kill()
        _cleanup(records)


def test_a_worker_killed_by_a_signal_gives_128_plus_the_signal(job):
    table = write_rank_table(job / "rank_table.json", 2)
    proc = _run(job, table, "--ranks=2", "--mode=killed", "--fail_rank=1")
    records = _records(job, range(2))
    try:
        assert proc.returncode == 128 + signal.SIGKILL, proc.stdout + proc.stderr
        assert "ERROR: rank 1 exited with -9" in proc.stderr
        assert _alive_pids(records) == []
    finally:
        _cleanup(records)


def _signal_launcher(job, mode, grace, sig):
    """Start 2 workers in ``mode``, send ``sig`` to the launcher once both are up: (exit status, seconds it took
    to exit, worker pids still alive)."""
    table = write_rank_table(job / "rank_table.json", 2)
    proc = subprocess.Popen(_cmd(job, table, "--ranks=2", f"--mode={mode}", launch_flags=[f"--grace={grace}"]),
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    records = {}
    try:
        records = _wait_up(job, range(2), proc)
        t0 = time.time()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
        return proc.returncode, time.time() - t0, _alive_pids(records), out + err
    finally:
        proc.kill()
        _cleanup(records)


def test_a_worker_ignoring_sigterm_is_killed_after_grace(job):
    rc, seconds, alive, output = _signal_launcher(job, "stubborn", 1, signal.SIGTERM)
    assert rc == 128 + signal.SIGTERM, output
    assert 1 <= seconds < 10 and alive == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_launcher_stops_the_workers(job, sig):
    rc, seconds, alive, output = _signal_launcher(job, "wait", 60, sig)
    assert rc == 128 + sig and seconds < 10, output
    assert alive == []


def test_tf_config_addresses_every_rank_of_a_two_server_table(job):
    table = write_rank_table(job / "rank_table.json", 2, servers=("127.0.0.1", "127.0.0.2"))
    workers = ["127.0.0.1:5000", "127.0.0.1:5001", "127.0.0.2:5002", "127.0.0.2:5003"]
    assert launch.worker_addresses(load_rank_table(table), 5000) == workers
    port = free_port(4)
    proc = _run(job, table, "--ranks=2", launch_flags=["--server_index=1", f"--port={port}"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "launch: server 1 (127.0.0.2) of 2, 2 of 4 ranks here" in proc.stdout
    assert "hello from rank" not in proc.stdout  # rank 0 runs on the other server
    records = _records(job, (2, 3))
    assert not (job / "out" / "rank_0").exists() and not (job / "out" / "rank_1").exists()
    workers = [f"127.0.0.{1 + r // 2}:{port + r}" for r in range(4)]
    for rank, device in ((2, 0), (3, 1)):
        env = records[rank]["env"]
        assert json.loads(env["TF_CONFIG"]) == {"cluster": {"worker": workers},
                                                "task": {"type": "worker", "index": rank}}
        assert env["RANK_ID"] == str(rank) and env["RANK_SIZE"] == "4"
        assert env["RANK_TABLE_FILE"] == str(table.resolve())
        assert env["DEVICE_ID"] == env["ASCEND_DEVICE_ID"] == str(device)
        assert env["CUDA_VISIBLE_DEVICES"] is None  # --device=cpu
        assert env["MZ_LAUNCHER_PID"].isdigit()


def test_worker_env_hccl_has_no_tf_config_and_gpu_gets_one_device(tmp_path):
    table = load_rank_table(write_rank_table(tmp_path / "t.json", 2))
    dev = table.devices_of(0)[1]
    hccl = launch.worker_env(table, dev, "npu", None, base={"TF_CONFIG": "stale", "PATH": "/bin"})
    assert "TF_CONFIG" not in hccl and "CUDA_VISIBLE_DEVICES" not in hccl and hccl["PATH"] == "/bin"
    assert hccl["RANK_ID"] == "1" and hccl["DEVICE_ID"] == "1"
    gpu = launch.worker_env(table, dev, "gpu", launch.worker_addresses(table, 7000), base={})
    assert gpu["CUDA_VISIBLE_DEVICES"] == "1" and json.loads(gpu["TF_CONFIG"])["task"]["index"] == 1


@pytest.mark.parametrize("flags, message", [
    (["--server_index=2"], "--server_index '2' is not auto or 0..0"),
    (["--device_num=8"], "--device_num is 8"),
])
def test_a_bad_table_or_server_is_one_line_and_exit_2_before_any_worker(job, flags, message):
    table = write_rank_table(job / "rank_table.json", 2)
    proc = _run(job, table, launch_flags=flags)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("ERROR: ") and message in lines[0], \
        proc.stderr
    assert str(table) in lines[0] and not (job / "out").exists()


def test_help_exits_0_and_names_the_shared_flags(job):
    proc = subprocess.run([sys.executable, str(job / "launcher.py"), "-h"], env=_env(), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr == ""
    for flag in ("--rank_table", "--output_path", "--server_index", "--device_num", "--port", "--device", "--grace"):
        assert flag in proc.stdout
