"""Two ranks on CPU through scripts/run_distribute_train.sh: rank table -> msrun -> DATA_PARALLEL."""
import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import mindspore as ms

from common.banner import parse_banner
from conftest import RECIPE, SMALL, env, run

SCRIPT = RECIPE / "scripts" / "run_distribute_train.sh"


def _table(path, ranks=2, dup=False):
    devices = [{"device_id": str(i), "device_ip": f"192.98.92.{10 + i}", "rank_id": "0" if dup else str(i)}
               for i in range(ranks)]
    path.write_text(json.dumps({"version": "1.0", "server_count": "1", "status": "completed",
                                "server_list": [{"server_id": "127.0.0.1", "host_nic_ip": "reserve",
                                                 "device": devices}]}))
    return path


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cmd(table, digits, out, steps):
    return ["bash", SCRIPT, table, "imagenet", digits.parent, f"--output_path={out}", "--batch_size=8",
            f"--train_steps={steps}", "--epoch_size=1", "--log_every=1", "--device_target=CPU", *SMALL]


def _env(port):
    return {**env(), "MASTER_PORT": str(port), "CLUSTER_TIME_OUT": "60"}


def _first_loss(log):
    return re.search(r"epoch 1 step 1 \[\d+/\d+\] loss (\S+)", Path(log).read_text()).group(1)


def test_two_ranks_keep_identical_weights_on_different_data(digits, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([str(c) for c in _cmd(_table(tmp_path / "t.json"), digits, out, 3)], cwd=tmp_path,
                          env=_env(_free_port()), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert proc.stdout.count("Final result") == 1  # rank 0 only
    banner = parse_banner(proc.stdout)
    rec = json.loads((out / "TinyDarknet_for_MindSpore_bs8_2p_perf.json").read_text())
    assert rec["rank_size"] == 2 and rec["global_batch_size"] == 16
    assert rec["images_per_sec"] == pytest.approx(banner["images_per_sec"], abs=0.01)
    a, b = (ms.load_checkpoint(str(out / "checkpoints" / r / "train_tinydarknet_imagenet-1_3.ckpt"))
            for r in "01")
    trained = [k for k in a if "moving_" not in k and k not in ("epoch_num", "step_num")]
    assert "conv8.conv.weight" in trained and "moments.conv8.conv.weight" in trained
    for k in trained:  # gradients are all-reduced (mean), so the weights and momenta stay in lockstep
        np.testing.assert_array_equal(a[k].asnumpy(), b[k].asnumpy(), err_msg=k)
    # BN running statistics are per rank (no SyncBN, as the original): they differ only if the data did
    assert not np.allclose(a["conv1.bn.moving_mean"].asnumpy(), b["conv1.bn.moving_mean"].asnumpy())
    logs = out / "msrun_logs"
    assert _first_loss(logs / "worker_0.log") != _first_loss(logs / "worker_1.log")


def test_killing_one_rank_ends_the_job_non_zero(digits, tmp_path):
    out = tmp_path / "out"
    tag = f"TD_DIST_TEST={os.getpid()}-{time.time()}"  # marks every process of this job, orphans included
    job_env = {**_env(_free_port()), "TD_DIST_TEST": tag.split("=", 1)[1]}
    proc = subprocess.Popen([str(c) for c in _cmd(_table(tmp_path / "t.json"), digits, out, 60)], cwd=tmp_path,
                            env=job_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        log1 = out / "msrun_logs" / "worker_1.log"
        deadline = time.time() + 180
        while not (log1.exists() and "epoch 1 step 1 " in log1.read_text(errors="replace")):
            assert proc.poll() is None and time.time() < deadline, "rank 1 never started training"
            time.sleep(0.5)
        os.kill(_tagged(tag, b"MS_ROLE=MS_WORKER", b"RANK_ID=1")[0], signal.SIGKILL)
        t0 = time.time()
        stdout, _ = proc.communicate(timeout=150)  # documented bound: msrun notices a lost rank in ~30-60 s
        assert proc.returncode != 0
        assert "ERROR: distributed job failed" in stdout
        assert time.time() - t0 < 150
        time.sleep(2)
        assert not _tagged(tag), "processes of the failed job are still running"
    finally:
        for pid in _tagged(tag):
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _tagged(tag, *markers):
    """Live processes whose environment holds ``tag`` and every marker."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            environ = (d / "environ").read_bytes().split(b"\0")
            state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and tag.encode() in environ and all(m in environ for m in markers):
            found.append(int(d.name))
    return found


def test_bad_rank_table_fails_before_any_process_starts(digits, tmp_path):
    out = tmp_path / "out"
    proc = run(_cmd(_table(tmp_path / "dup.json", dup=True), digits, out, 3), check=False, cwd=tmp_path)
    assert proc.returncode == 2
    errors = [line for line in proc.stdout.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and "dup.json" in errors[0] and "duplicate rank_id" in errors[0]
    assert not out.exists()
