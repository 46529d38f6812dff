"""Two CPU workers from a rank table through test/train_performance_8p.sh (MultiWorkerMirroredStrategy).

A 2-device table against one process on the same global batch, a two-server table on loopback addresses,
a killed worker, a bad table.
"""
import csv
import json
import os
import re
import signal
import subprocess
import time

import numpy as np
import pytest

from common import events
from common.banner import parse_banner
from common.testing import free_port, write_rank_table
from conftest import RECIPE, env


def _cmd(noise, tmp_path, *extra):
    table = write_rank_table(tmp_path / "rank_table.json", 2)
    return ["bash", str(RECIPE / "test" / "train_performance_8p.sh"), f"--data_path={noise}",
            f"--rank_table={table}", f"--output_path={tmp_path / 'out'}", "--device=cpu",
            f"--port={free_port(consecutive=2)}", *extra]  # worker r listens on port + r


def _by_rank(out, kind):
    """The last ``kind`` event of each rank in ``out``: {rank: event}."""
    return {e["rank"]: e for e in events.read(out, kind)}


@pytest.fixture(scope="module")
def mirrored_pairs(digits, tmp_path_factory):
    """16 training images: 8 digits, each twice in a row under two different labels (then 16 test images).

    Rank r of 2 reads every 2nd image from r (src.data.shard), so both ranks hold the same 8 pictures with
    different labels, and one process at batch 16 holds all 16: the same global batch.
    """
    from ci.make_data import write_cifar10
    from common.cifar import load_cifar10
    x, y, x_test, y_test, _ = load_cifar10(digits)
    images = np.concatenate([np.repeat(x[:8], 2, axis=0), x_test[:16]])
    labels = np.concatenate([np.stack([y[:8], (y[:8] + 5) % 10], axis=1).reshape(-1), y_test[:16]])
    out = tmp_path_factory.mktemp("pairs")
    write_cifar10(out / "cifar-10-batches-py", images, labels, np.arange(16), np.arange(16, 32), "pairs")
    return out


def _h5_arrays(path):
    import h5py
    arrays = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: arrays.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return arrays


def _epoch_losses(out):
    with open(out / "summary.csv") as fh:
        return [float(row["train_loss"]) for row in csv.DictReader(fh)]


def _first_step_loss(out):
    return next(e["loss"] for e in events.read(out, "step") if e["epoch"] == 1 and e["step"] == 1)


def test_two_workers_match_one_process_on_the_same_global_batch(mirrored_pairs, tmp_path):
    """2 workers x batch 8 against 1 process x batch 16: same seed, same initial weights (compared), same 16
    images per step (every epoch is one step over the whole training set), no CutMix (it pairs images within a
    worker's shard, so the two runs would mix different pairs).

    ResNet-20 normalises with per-replica batch statistics (no SyncBN), which normally makes a 2 x 8 step differ
    from a 1 x 16 step; here both ranks hold the same 8 pictures, so every replica's BatchNorm statistics equal
    the global batch's and the first step's loss must agree to print precision (5 significant digits). Later
    steps agree only loosely (measured: 5e-4 and 2.4e-3), most likely through Adam: it divides by the root of
    its second moment, so a parameter whose exact gradient is zero (a conv bias feeding straight into
    BatchNorm) turns float32 rounding noise into an update of up to lr (1e-3), and one mean of 16 rounds
    differently from two means of 8.
    """
    flags = [f"--data_path={mirrored_pairs}", "--train_epochs=3", "--device=cpu", "--no_cutmix", "--log_steps=1"]
    one_out = tmp_path / "one"
    one = subprocess.Popen(["bash", str(RECIPE / "test" / "train_performance_1p.sh"), *flags, "--batch_size=16",
                            f"--output_path={one_out}"], cwd=RECIPE, env=env(), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    try:
        two = subprocess.run(_cmd(mirrored_pairs, tmp_path, "--batch_size=8", *flags[1:]), cwd=RECIPE, env=env(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=500)
        one_stdout = one.communicate(timeout=300)[0]
    finally:
        if one.poll() is None:
            one.kill()
            one.wait()
    assert two.returncode == 0, two.stdout[-3000:]
    assert one.returncode == 0, one_stdout[-3000:]
    two_out = tmp_path / "out"
    init_one, init_two = _h5_arrays(one_out / "initial_weights.h5"), _h5_arrays(two_out / "initial_weights.h5")
    assert init_one.keys() == init_two.keys() and len(init_one) > 60
    for name, value in init_one.items():
        np.testing.assert_array_equal(value, init_two[name], err_msg=name)
    losses_one, losses_two = _epoch_losses(one_out), _epoch_losses(two_out)
    assert len(losses_one) == len(losses_two) == 3
    assert losses_two[0] == pytest.approx(losses_one[0], abs=2e-5)
    assert losses_two[1:] == pytest.approx(losses_one[1:], abs=0.02)
    assert losses_one[2] < losses_one[0] - 0.5  # the steps did train, so the later losses compare updates
    # the per-step progress line is the global mean under the strategy too, not the sum over workers
    assert _first_step_loss(two_out) == pytest.approx(_first_step_loss(one_out), abs=2e-4)
    initial = _by_rank(two_out, "initial_weights")
    assert initial[0]["digest"] == initial[1]["digest"] == _by_rank(one_out, "initial_weights")[0]["digest"]
    final = _by_rank(two_out, "checkpoint")  # each worker's last: its final weights
    assert final[0]["global_step"] == final[1]["global_step"] == 3 and final[0]["digest"] == final[1]["digest"]


def test_two_servers_on_loopback_see_different_data_and_end_with_identical_weights(noise, tmp_path):
    """A two-node table (127.0.0.1 and 127.0.0.2, one device each): one launcher per "server"."""
    table = write_rank_table(tmp_path / "two_servers.json", 1, servers=("127.0.0.1", "127.0.0.2"))
    port = free_port(consecutive=2)
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
    weights = [_by_rank(tmp_path / f"node{r}", "checkpoint")[r]["digest"] for r in (0, 1)]  # the final weights
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
    table = json.loads((tmp_path / "rank_table.json").read_text())
    (tmp_path / "rank_table.json").write_text(json.dumps({**table, "server_count": "2"}))
    proc = subprocess.run(cmd, cwd=RECIPE, env=env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "server_count" in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "out" / "rank_0").exists()
