"""torchrun + gloo on CPU from a rank table, through test/train_performance_8p.sh."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time

import pytest

from common.banner import HEADER, parse_banner
from conftest import RECIPE, env

SCRIPT = RECIPE / "test" / "train_performance_8p.sh"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _table(path, servers):
    rank, server_list = 0, []
    for sid, n in servers:
        devices = []
        for d in range(n):
            devices.append({"device_id": str(d), "device_ip": f"192.98.92.{10 + rank}", "rank_id": str(rank)})
            rank += 1
        server_list.append({"server_id": sid, "device": devices, "host_nic_ip": "reserve"})
    path.write_text(json.dumps({"version": "1.0", "server_count": str(len(servers)), "server_list": server_list,
                                "status": "completed"}))
    return path


def _args(digits, out, table, steps, *extra):
    return ["bash", str(SCRIPT), f"--data_path={digits}", f"--output_path={out}", f"--rank_table={table}",
            "--device=cpu", "--batch_size=4", "--train_epochs=1", f"--train_steps={steps}",
            "--cfg-options=data.workers_per_gpu=0", "--cfg-options=data.val.max_samples=16", *extra]


def test_two_servers_on_loopback_train_in_step_on_different_data(digits, tmp_path):
    table = _table(tmp_path / "rank_table.json", [("127.0.0.1", 1), ("127.0.0.2", 1)])
    e = dict(env(), PORT=str(_free_port()))
    outs = [tmp_path / f"server{i}" for i in range(2)]
    procs = [subprocess.Popen(_args(digits, outs[i], table, 2, f"--server_index={i}"), cwd=RECIPE, env=e,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    try:
        logs = [p.communicate(timeout=1800)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], logs[0][-2000:] + logs[1][-2000:]
    # only rank 0 (server 0) prints the banner and writes the record and checkpoints
    assert logs[0].count(HEADER) == 1 and HEADER not in logs[1]
    assert parse_banner(logs[0])["images_per_sec"] > 0
    record = json.loads((outs[0] / "Resnet50_cifar_for_PyTorch_bs8_2p_perf.json").read_text())
    assert record["rank_size"] == 2 and record["global_batch_size"] == 8
    digests = record["rank_param_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]  # identical weights on both ranks
    assert record["rank_shared_samples"] == 0 and record["rank_samples_last_epoch"] == [8, 8]  # different data
    assert (outs[0] / "epoch_1.pth").is_file() and not (outs[1] / "epoch_1.pth").exists()


def _descendants(pid):
    kids = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout.split()
    out = []
    for k in map(int, kids):
        out += [k] + _descendants(k)
    return out


def _local_rank(pid):
    try:
        environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
    except OSError:
        return None
    for item in environ:
        if item.startswith(b"LOCAL_RANK="):
            return int(item.split(b"=", 1)[1])
    return None


def test_killing_one_rank_ends_the_job_with_an_error(digits, tmp_path):
    table = _table(tmp_path / "rank_table.json", [("127.0.0.1", 2)])
    out = tmp_path / "out"
    proc = subprocess.Popen(_args(digits, out, table, 50), cwd=RECIPE, env=dict(env(), PORT=str(_free_port())),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        victim, deadline = None, time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            logs = list(out.glob("*.log.json"))
            if logs and '"mode": "train"' in logs[0].read_text():
                victim = next((p for p in _descendants(proc.pid) if _local_rank(p) == 1), None)
                if victim:
                    os.kill(victim, signal.SIGKILL)
                    break
            time.sleep(0.2)
        assert victim, "rank 1 was not found while training"
        t0 = time.time()
        rc = proc.wait(timeout=180)  # torchrun stops the surviving rank and reports the failure
        assert rc != 0
        assert time.time() - t0 < 180
        assert not any(_local_rank(p) is not None for p in _descendants(proc.pid))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_bad_rank_table_fails_before_any_process_starts(digits, tmp_path):
    table = tmp_path / "bad.json"
    table.write_text('{"version": "1.0", "server_count": "2", "server_list": [], "status": "completed"}')
    r = subprocess.run(_args(digits, tmp_path / "o", table, 1), cwd=RECIPE, env=env(), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode != 0
    assert str(table) in r.stderr and "server_count" in r.stderr
    assert not list((tmp_path / "o").glob("*.pth"))
