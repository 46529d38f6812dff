"""Two CPU workers from a 2-device rank table through test/train_performance_8p.sh (MultiWorkerMirroredStrategy)."""
import json
import os
import re
import signal
import socket
import subprocess
import time

from common.banner import parse_banner
from conftest import RECIPE, env

TABLE = {"version": "1.0", "server_count": "1", "status": "completed",
         "server_list": [{"server_id": "127.0.0.1", "host_nic_ip": "reserve", "device": [
             {"device_id": "0", "device_ip": "192.98.92.10", "rank_id": "0"},
             {"device_id": "1", "device_ip": "192.98.92.11", "rank_id": "1"}]}]}


def _free_port():
    # two consecutive free ports (worker r listens on port + r)
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                    return port
                except OSError:
                    continue
    raise RuntimeError("no two consecutive free ports")


def _cmd(noise, tmp_path, *extra):
    table = tmp_path / "rank_table.json"
    table.write_text(json.dumps(TABLE))
    return ["bash", str(RECIPE / "test" / "train_performance_8p.sh"), f"--data_path={noise}",
            f"--rank_table={table}", f"--output_path={tmp_path / 'out'}", "--device=cpu", f"--port={_free_port()}",
            *extra]


def test_two_servers_on_loopback_see_different_data_and_end_with_identical_weights(noise, tmp_path):
    """A two-node table (127.0.0.1 and 127.0.0.2, one device each): one launcher per "server"."""
    table = tmp_path / "two_servers.json"
    table.write_text(json.dumps({**TABLE, "server_count": "2", "server_list": [
        {"server_id": "127.0.0.1", "host_nic_ip": "reserve",
         "device": [{"device_id": "0", "device_ip": "192.98.92.10", "rank_id": "0"}]},
        {"server_id": "127.0.0.2", "host_nic_ip": "reserve",
         "device": [{"device_id": "0", "device_ip": "192.98.92.11", "rank_id": "1"}]}]}))
    port = _free_port()
    procs = [subprocess.Popen(["bash", str(RECIPE / "test" / "train_performance_8p.sh"), f"--data_path={noise}",
                               f"--rank_table={table}", f"--server_index={i}", f"--output_path={tmp_path / f'node{i}'}",
                               "--device=cpu", f"--port={port}", "--train_epochs=1", "--batch_size=8",
                               "--train_steps=2"],
                              cwd=RECIPE, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in (0, 1)]
    try:
        outs = [p.communicate(timeout=500)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    logs = [(tmp_path / f"node{r}" / f"rank_{r}" / "train.log").read_text() for r in (0, 1)]
    shards = [re.search(r"shard sha256 (\w+)", t).group(1) for t in logs]
    weights = [re.search(r"final weights sha256 (\w+)", t).group(1) for t in logs]
    assert shards[0] != shards[1] and weights[0] == weights[1]
    assert parse_banner(outs[0])["images_per_sec"] > 0 and "Final result" not in outs[1]
    record = json.loads((tmp_path / "node0" / "cutmix_ID2502_for_TensorFlow2.X_bs8_2p_dynamic_eval_perf.json").read_text())
    assert record["rank_size"] == 2 and record["global_batch_size"] == 16 and record["steps"] == 2
    assert not list((tmp_path / "node1").glob("*.json"))  # only rank 0 writes records
    assert not list((tmp_path / "node1").glob(".scratch_rank*"))  # and keeps checkpoints


def test_killing_a_rank_ends_the_job_non_zero(noise, tmp_path):
    proc = subprocess.Popen(_cmd(noise, tmp_path, "--train_epochs=50", "--batch_size=8"), cwd=RECIPE, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        pid = None
        for line in proc.stdout:
            m = re.match(r"launch: rank 1 device 1 pid (\d+)", line)
            if m:
                pid = int(m.group(1))
                break
        assert pid, "launcher did not report rank 1"
        log = tmp_path / "out" / "rank_1" / "train.log"
        deadline = time.time() + 300
        while "shard sha256" not in log.read_text():  # rank 1 has joined the job
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.2)
        t0 = time.time()
        os.kill(pid, signal.SIGKILL)
        rest = proc.communicate(timeout=120)[0]
        assert proc.returncode != 0 and "rank 1 exited" in rest
        assert time.time() - t0 < 60
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_bad_rank_table_fails_before_any_worker_starts(noise, tmp_path):
    cmd = _cmd(noise, tmp_path)
    (tmp_path / "rank_table.json").write_text(json.dumps({**TABLE, "server_count": "2"}))
    proc = subprocess.run(cmd, cwd=RECIPE, env=env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "server_count" in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "out" / "rank_0").exists()
