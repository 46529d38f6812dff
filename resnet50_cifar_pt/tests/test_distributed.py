"""torchrun + gloo on CPU from a rank table, through test/train_performance_8p.sh.

A two-server table on loopback addresses (checked against a 1-device run of the same global batch), a killed
rank, a bad table.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest

from common import events
from common.banner import HEADER, parse_banner
from common.testing import free_port, write_rank_table
from conftest import RECIPE, env

SCRIPT = RECIPE / "test" / "train_performance_8p.sh"


def _args(digits, out, table, steps, *extra, script=SCRIPT):
    table_flag = [f"--rank_table={table}"] if script == SCRIPT else []
    return ["bash", str(script), f"--data_path={digits}", f"--output_path={out}", *table_flag,
            "--device=cpu", "--batch_size=4", "--train_epochs=1", f"--train_steps={steps}",
            "--cfg-options=data.workers_per_gpu=0", "--cfg-options=data.val.max_samples=16", *extra]


@pytest.fixture(scope="module")
def twin_shards(digits, tmp_path_factory):
    """8 training images (one global batch of 2 x 4) where rank 1's epoch-1 share repeats rank 0's pictures.

    mmcls' own DistributedSampler (seed 0, as the 8p scripts pass) says which indices each rank draws in the
    first epoch; index j of rank 0's share and index j of rank 1's get the same digit picture, under random
    labels. Then 16 test images.
    """
    from ci.make_data import write_cifar100
    from common.cifar import load_cifar100
    from mmcls.datasets.samplers import DistributedSampler
    x, _, _ = load_cifar100(digits, "train")
    x_test, y_test, _ = load_cifar100(digits, "test")
    shares = []
    for rank in (0, 1):
        sampler = DistributedSampler(range(8), num_replicas=2, rank=rank, shuffle=True, round_up=True, seed=0)
        sampler.set_epoch(0)
        shares.append(list(sampler))
    images = np.zeros((8,) + x.shape[1:], np.uint8)
    for j, (a, b) in enumerate(zip(*shares)):
        images[a] = images[b] = x[j]
    labels = np.random.RandomState(0).randint(0, 10, 8)
    out = tmp_path_factory.mktemp("twins")
    write_cifar100(out / "cifar-100-python", np.concatenate([images, x_test[:16]]), np.concatenate([labels, y_test[:16]]),
                   np.arange(8), np.arange(8, 24), "twins")
    return out


def _train_losses(work_dir):
    """The losses of the "step" events, at the 5 decimals of mmcv's log that the tolerances below were set for."""
    steps = events.read(work_dir, "step")
    assert len({e["pid"] for e in steps}) == 1 and {e["rank"] for e in steps} == {0}, steps  # one run, rank 0
    return [round(e["loss"], 5) for e in steps]


# 1-device parity: no augmentation (random crop and flip draw per process), one step per epoch over the whole
# training set (mmcls' single-device sampler orders data differently from its DistributedSampler, so only a
# step over the whole set is the same global batch in both runs), lr 0.01 (at the config's 0.1 eight images
# send the loss to 11 by step 3, where any difference is amplified)
PARITY = ["--train_epochs=3", "--cfg-options=data.train.pipeline.0.padding=0",
          "--cfg-options=data.train.pipeline.1.flip_prob=0.0", "--cfg-options=optimizer.lr=0.01"]


def test_two_servers_on_loopback_train_in_step_on_different_data_and_match_one_device(twin_shards, tmp_path):
    """Two launchers (127.0.0.1 and 127.0.0.2) form one 2-rank job; a 1-device run at batch 8 runs beside it.

    Same seed (--seed 0, as the 8p scripts) hence the same initial weights (digest in both records), same 8
    images per step. BatchNorm normalises each rank's 4 images alone (DDP, no SyncBN, as the original): with
    twin_shards the first step deals the same 4 pictures to both ranks, so the per-rank statistics equal the
    global batch's and the first loss (all-reduced mean over ranks) must match to the log's 5 decimals. Later
    epochs deal the 8 images differently, so per-rank statistics differ and the losses only agree loosely
    (measured: 3e-4 at step 2, 0.023 at step 3); a sum instead of a mean of gradients (a doubled lr) moves
    step 2 by 0.7.
    """
    table = write_rank_table(tmp_path / "rank_table.json", 1, servers=("127.0.0.1", "127.0.0.2"))
    # torchrun sets OMP_NUM_THREADS=1 only for several processes per node; here two "nodes" and the 1-device
    # run share 2 cores, where spinning OpenMP threads would make every step many times slower
    e = dict(env(), PORT=str(free_port()), OMP_NUM_THREADS="1")
    outs = [tmp_path / f"server{i}" for i in range(2)]
    one_dir = tmp_path / "one"
    one = subprocess.Popen(_args(twin_shards, one_dir, table, 1, "--batch_size=8", "--seed=0", *PARITY,
                                 script=RECIPE / "test" / "train_performance_1p.sh"),
                           cwd=RECIPE, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    procs = [subprocess.Popen(_args(twin_shards, outs[i], table, 1, f"--server_index={i}", *PARITY), cwd=RECIPE,
                              env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    try:
        logs = [p.communicate(timeout=900)[0] for p in procs]
        one_log = one.communicate(timeout=600)[0]
    finally:
        for p in procs + [one]:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], logs[0][-2000:] + logs[1][-2000:]
    assert one.returncode == 0, one_log[-2000:]
    # only rank 0 (server 0) prints the banner and writes the record and checkpoints
    assert logs[0].count(HEADER) == 1 and HEADER not in logs[1]
    assert parse_banner(logs[0])["images_per_sec"] > 0
    record = json.loads((outs[0] / "Resnet50_cifar_for_PyTorch_bs8_2p_perf.json").read_text())
    assert record["rank_size"] == 2 and record["global_batch_size"] == 8
    digests = record["rank_param_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]  # identical weights on both ranks
    assert record["rank_shared_samples"] == 0 and record["rank_samples_last_epoch"] == [4, 4]  # different data
    assert (outs[0] / "epoch_3.pth").is_file() and not (outs[1] / "epoch_3.pth").exists()

    single = json.loads((one_dir / "Resnet50_cifar_for_PyTorch_bs8_1p_perf.json").read_text())
    assert record["initial_param_digest"] == single["initial_param_digest"]
    assert events.last(outs[0], "initial_weights")["digest"] == events.last(one_dir, "initial_weights")["digest"] \
        == single["initial_param_digest"]
    two, one_device = _train_losses(outs[0]), _train_losses(one_dir)
    assert len(two) == len(one_device) == 3
    assert two[0] == pytest.approx(one_device[0], abs=2e-5)
    assert two[1:] == pytest.approx(one_device[1:], abs=0.1)
    assert one_device[2] < one_device[0] - 1  # it trained, so the later steps compare updates


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
    table = write_rank_table(tmp_path / "rank_table.json", 2)
    out = tmp_path / "out"
    proc = subprocess.Popen(_args(digits, out, table, 50), cwd=RECIPE, env=dict(env(), PORT=str(free_port())),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        victim, deadline = None, time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if events.read(out, "step"):
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
