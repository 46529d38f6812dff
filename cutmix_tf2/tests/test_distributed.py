"""Two CPU workers from a rank table through test/train_performance_8p.sh (MultiWorkerMirroredStrategy).

A 2-device table against one process on the same global batch, a two-server table on loopback addresses,
a killed worker, a bad table. What the ranks did is read from the files they saved (checkpoints, models) and
from events, never from log lines.
"""
import csv
import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from common import events
from common.banner import parse_banner
from common.testing import free_port, kill_cases, write_rank_table
from conftest import RECIPE, RUN_TIMEOUT, adam_slots, assert_same_tensors, ckpt_tensors, env

# Adam's moments after step 1, 2 workers against 1 process (test_first_adam_moments_...): largest relative
# difference per variable, measured 1.6e-2 (float32 summation order, see there); a summed gradient gives 1 for m
# (2x) and 3 for v (4x)
MOMENT_RTOL = 0.05
# below this share of the largest |m| (|v|: squared) a slot holds rounding noise of an exact zero gradient
# (measured at most 1.3e-5 for m, 1.8e-10 for v; the smallest real one 7e-3 for m, 5e-5 for v)
NOISE = {"m": 1e-4, "v": 1e-8}
# kill of a rank -> the launcher's exit, measured up to 10.8 s on the loaded machine (2 cores, load average 19)
DEAD_RANK_LIMIT = 60


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


@pytest.fixture(scope="module")
def one_and_two(mirrored_pairs, tmp_path_factory):
    """3 epochs of one step on ``mirrored_pairs``: 1 process x batch 16 and, beside it, 2 workers x batch 8 (a
    2-device table); no CutMix (it pairs images within a worker's shard, so the two runs would mix different
    pairs). Every checkpoint kept (--keep_checkpoints=3): epoch_0001 holds Adam's state after the first step.
    Returns (folder of the 1-process run, its stdout, folder of the 2-worker job, its stdout)."""
    tmp_path = tmp_path_factory.mktemp("one_and_two")
    flags = [f"--data_path={mirrored_pairs}", "--train_epochs=3", "--device=cpu", "--no_cutmix", "--log_steps=1",
             "--keep_checkpoints=3"]
    one_out = tmp_path / "one"
    one = subprocess.Popen(["bash", str(RECIPE / "test" / "train_performance_1p.sh"), *flags, "--batch_size=16",
                            f"--output_path={one_out}"], cwd=RECIPE, env=env(), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    try:
        two = subprocess.run(_cmd(mirrored_pairs, tmp_path, "--batch_size=8", *flags[1:]), cwd=RECIPE, env=env(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=RUN_TIMEOUT)
        one_stdout = one.communicate(timeout=RUN_TIMEOUT)[0]
    finally:
        if one.poll() is None:
            one.kill()
            one.wait()
    assert two.returncode == 0, two.stdout[-3000:]
    assert one.returncode == 0, one_stdout[-3000:]
    return one_out, one_stdout, tmp_path / "out", two.stdout


def test_two_workers_match_one_process_on_the_same_global_batch(one_and_two):
    """2 workers x batch 8 against 1 process x batch 16: same seed, same initial weights (compared), same 16
    images per step (every epoch is one step over the whole training set), no CutMix.

    ResNet-20 normalises with per-replica batch statistics (no SyncBN), which normally makes a 2 x 8 step differ
    from a 1 x 16 step; here both ranks hold the same 8 pictures, so every replica's BatchNorm statistics equal
    the global batch's and the first step's loss must agree to print precision (5 significant digits). Later
    steps agree only loosely (measured: 5e-4 and 2.4e-3), most likely through Adam: it divides by the root of
    its second moment, so a parameter whose exact gradient is zero (a conv bias feeding straight into
    BatchNorm) turns float32 rounding noise into an update of up to lr (1e-3), and one mean of 16 rounds
    differently from two means of 8. These losses cannot tell an averaged from a summed gradient (Adam's step
    hardly depends on the gradient's scale): test_first_adam_moments_... below can.
    """
    one_out, _, two_out, _ = one_and_two
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
    # without --rank_checkpoints only rank 0 keeps checkpoints and models: rank 1 leaves nothing behind
    assert not (two_out / ".scratch_rank1").exists() and not (two_out / "rank_1" / "checkpoints").exists()
    assert not list((two_out / "rank_1").glob("*.h5")) and not (two_out / "rank_1" / "saved_model").exists()


def test_first_adam_moments_show_the_gradients_are_averaged_over_both_shards(one_and_two):
    """After the first step Adam holds m = (1 - beta1) g and v = (1 - beta2) g^2 of the step's gradient g.

    Rank 0's checkpoint of the 2-worker job and the 1-process run's, both after step 1 (epoch_0001), must hold
    the same m and v: g of the job is the mean of both workers' gradients over their 8 images each, g of the
    process the gradient over its 16, the same function of the weights here (both workers hold the same 8
    pictures, so per-replica BatchNorm sees the global batch's statistics). A sum over the workers would double
    m and quadruple v; a worker that read the other's shard (same pictures, other labels) would change g.

    Tolerance: float32 gradients of this network at initialisation depend on the summation order: in one
    process, the same 16 images in another order change a layer's gradient by up to 1% (relative L2 norm; the
    early layers, below many BatchNorm backward passes). Measured between the two runs here: at most 1.6e-2 per
    variable, so MOMENT_RTOL = 0.05. Conv biases that feed straight into BatchNorm have an exact gradient of
    zero and hold only rounding noise (relative error ~1); they are checked to be negligible in both runs.
    """
    one_out, _, two_out, _ = one_and_two
    slots_one = adam_slots(ckpt_tensors(one_out / "checkpoints" / "epoch_0001"))
    slots_two = adam_slots(ckpt_tensors(two_out / "checkpoints" / "epoch_0001"))
    assert slots_one["iterations"] == slots_two["iterations"] == 1
    assert slots_one["m"].keys() == slots_two["m"].keys() and len(slots_one["m"]) > 60
    for kind in ("m", "v"):
        one, two = slots_one[kind], slots_two[kind]
        scale = max(float(np.max(np.abs(a))) for a in one.values())
        assert scale > {"m": 0.01, "v": 1e-4}[kind]  # real gradients: largest |m| measured 0.165, |v| 0.0027
        compared = 0
        for name, want in one.items():
            got = two[name]
            if np.max(np.abs(want)) < NOISE[kind] * scale:  # zero-gradient bias: noise in both runs
                assert np.max(np.abs(got)) < NOISE[kind] * scale, f"{kind}/{name}: {np.max(np.abs(got)):.3g}"
                continue
            rel = float(np.linalg.norm(got - want) / np.linalg.norm(want))
            assert rel < MOMENT_RTOL, f"{kind}/{name}: relative difference {rel:.3g} (|{kind}| {np.linalg.norm(want):.3g})"
            compared += 1
        assert compared >= 60  # every weight, BatchNorm parameter, shortcut and dense bias


def test_two_servers_on_loopback_see_different_data_and_end_with_identical_weights(noise, tmp_path):
    """A two-node table (127.0.0.1 and 127.0.0.2, one device each): one launcher per "server".

    With --rank_checkpoints rank 1 keeps its own checkpoint and model (in node1/rank_1/): after steps on
    different data (different shards, each CutMix'ed with its own seed) every tensor of the two ranks' final
    checkpoints (weights, BatchNorm statistics, Adam's slots) and of their model.h5 files must be bit-identical."""
    from src.data import load_arrays, shard
    table = write_rank_table(tmp_path / "two_servers.json", 1, servers=("127.0.0.1", "127.0.0.2"))
    port = free_port(consecutive=2)
    procs = [subprocess.Popen(["bash", str(RECIPE / "test" / "train_performance_8p.sh"), f"--data_path={noise}",
                               f"--rank_table={table}", f"--server_index={i}", f"--output_path={tmp_path / f'node{i}'}",
                               "--device=cpu", f"--port={port}", "--train_epochs=1", "--batch_size=8",
                               "--train_steps=2", "--rank_checkpoints"],
                              cwd=RECIPE, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in (0, 1)]
    try:
        outs = [p.communicate(timeout=RUN_TIMEOUT)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    # each rank read its own shard: the one the test computes from the data file with the recipe's functions
    x, y = load_arrays(noise)[:2]
    want = [hashlib.sha256(shard(x, y, r, 2)[0].tobytes()).hexdigest()[:16] for r in (0, 1)]
    shards = [_by_rank(tmp_path / f"node{r}", "initial_weights")[r]["shard"] for r in (0, 1)]
    assert shards == [{"size": 32, "sha256": want[0]}, {"size": 32, "sha256": want[1]}] and want[0] != want[1]
    # the files each rank saved, compared here
    ck0 = ckpt_tensors(tmp_path / "node0" / "checkpoints" / "epoch_0001")
    ck1 = ckpt_tensors(tmp_path / "node1" / "rank_1" / "checkpoints" / "epoch_0001")
    assert int(ck0["optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"]) == 2
    assert_same_tensors(ck1, ck0, "rank 1's final checkpoint against rank 0's")
    h5_0, h5_1 = _h5_arrays(tmp_path / "node0" / "model.h5"), _h5_arrays(tmp_path / "node1" / "rank_1" / "model.h5")
    assert h5_0.keys() == h5_1.keys() and len(h5_0) > 60
    for name, value in h5_0.items():
        np.testing.assert_array_equal(h5_1[name], value, err_msg=name)
    weights = [_by_rank(tmp_path / f"node{r}", "checkpoint")[r]["digest"] for r in (0, 1)]  # as the ranks say
    assert weights[0] == weights[1]
    assert parse_banner(outs[0])["images_per_sec"] > 0 and "Final result" not in outs[1]
    record = json.loads((tmp_path / "node0" / "cutmix_ID2502_for_TensorFlow2.X_bs8_2p_dynamic_eval_perf.json").read_text())
    assert record["rank_size"] == 2 and record["global_batch_size"] == 16 and record["steps"] == 2
    assert not list((tmp_path / "node1").glob("*.json"))  # only rank 0 writes records
    assert not list((tmp_path / "node1").glob(".scratch_rank*"))  # and rank 1 no scratch folder


# --- issue #22: a rank SIGKILLed after a checkpoint, the same command with --resume=auto ----------------------
# The run: test/train_full_8p.sh, 3 epochs, seed 7; here on the 64 noise images at batch 2 per rank (16
# steps per epoch: the kill lands well before the job's end), every rank keeping its files to be compared.
RESUME_FLAGS = ["--train_epochs=3", "--seed=7", "--batch_size=2", "--log_steps=1", "--rank_checkpoints"]


def _full_cmd(noise, tmp_path, out, *extra):
    table = write_rank_table(tmp_path / "rank_table.json", 2)
    return ["bash", str(RECIPE / "test" / "train_full_8p.sh"), f"--data_path={noise}", f"--rank_table={table}",
            f"--output_path={out}", "--device=cpu", f"--port={free_port(consecutive=2)}", *RESUME_FLAGS, *extra]


def _rank_files(out, rank, epoch=3):
    """(tensors of the rank's checkpoint of ``epoch``, its local.npz arrays, its model.h5 arrays) as saved."""
    base = out if rank == 0 else out / f"rank_{rank}"
    ckpt = base / "checkpoints" / f"epoch_{epoch:04d}"
    with np.load(ckpt / "local.npz") as f:
        local = {k: f[k] for k in f.files}
    return ckpt_tensors(ckpt), local, _h5_arrays(base / "model.h5")


@pytest.fixture(scope="module")
def uninterrupted(noise, tmp_path_factory):
    """The reference: the 2-rank job of RESUME_FLAGS run to the end without a kill (measured 207 s at load 4-6,
    about 4 min at load 9)."""
    tmp_path = tmp_path_factory.mktemp("uninterrupted")
    proc = subprocess.run(_full_cmd(noise, tmp_path, tmp_path / "out"), cwd=RECIPE, env=env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-3000:]
    return tmp_path / "out"


@pytest.mark.parametrize("victim, checkpoints", kill_cases([(1, 1), (0, 2)], default=0))
def test_a_rank_killed_after_a_checkpoint_resumes_to_the_uninterrupted_weights(uninterrupted, noise, tmp_path,
                                                                                 victim, checkpoints):
    """SIGKILL of rank ``victim`` once ``checkpoints`` checkpoints exist and it trained past them: the launcher
    exits non-zero within DEAD_RANK_LIMIT and no process of the job is left. In the second case rank 1's newest
    checkpoint is then taken away, as if rank 1 had died inside that save (atomic: the folder never appears, a
    temp folder is left): the ranks' newest steps differ and they must agree on the older one that both hold.
    The same command with --resume=auto: every rank
    says (its ``resume`` event) it restored the same global step, one saved before the kill, and both ranks end
    bit-identical to the uninterrupted job: every tensor of their last checkpoint (weights, BatchNorm statistics
    as saved: their mean over the ranks, Adam's m, v and step count), each rank's own BatchNorm moving statistics
    (local.npz; they differ between the ranks, each replica normalises its own shard's batches) and model.h5.

    Without local.npz (each replica resumed from the mean, as before #22) the 38 saved means differed by up to
    1.2e-6 (1.9e-6 in the issue) and each rank's own statistics by up to 0.035, all else bit-identical: the
    checks below catch either.

    Time, over the 3 minutes per case asked: one 2-rank job of these flags took 207 s on the 2-core machine at
    load 4-6 (20 s start, 60 s tracing the first step under the strategy, 22 s for the 48 steps and 3 saves,
    65 s saving model.h5 and saved_model at the end), so a case (killed job + resumed job) is about 5 min there
    and was 7 min (rank 1 case) and 18 min (rank 0 case) at load 10-23 with three other suites running: the
    fixed cost of two job starts and one final save, not of the steps, which are already as few as the kill
    allows (16 per epoch so that it lands before the end).
    """
    from common.testing import kill_job, kill_rank_after_checkpoint, tag_job, wait_job_gone
    out = tmp_path / "out"
    job = tag_job(env())
    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen(_full_cmd(noise, tmp_path, out), cwd=RECIPE, env=job, stdout=log,
                                stderr=subprocess.STDOUT, text=True)
        try:
            killed = kill_rank_after_checkpoint(proc, out, victim, checkpoints=checkpoints, timeout=RUN_TIMEOUT)
            t0 = time.time()
            rc = proc.wait(timeout=DEAD_RANK_LIMIT)
            assert time.time() - t0 < DEAD_RANK_LIMIT
            wait_job_gone(job)
        finally:
            kill_job(proc, job)
    text = (tmp_path / "killed.log").read_text()
    assert rc != 0 and f"rank {victim} exited" in text, text[-3000:]
    assert not (out / "model.h5").exists()
    saved = {(e["rank"], e["global_step"]) for e in events.read(out, "checkpoint")}
    if checkpoints > 1:  # rank 1 "died in its last save": its folder gone, the save's temp left behind
        last = max((e for e in events.read(out, "checkpoint") if e["rank"] == 1), key=lambda e: e["global_step"])
        torn = Path(last["path"])
        os.replace(torn, torn.with_name(f".{torn.name}.cut.tmp"))
        saved.discard((1, last["global_step"]))
    held = [{step for r, step in saved if r == rank} for rank in (0, 1)]
    resumed = subprocess.run(_full_cmd(noise, tmp_path, out, "--resume=auto"), cwd=RECIPE, env=env(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=RUN_TIMEOUT)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    restored = {e["rank"]: e for e in events.read(out, "resume") if e["checkpoint"] is not None}
    assert sorted(restored) == [0, 1]
    step = restored[0]["global_step"]
    assert restored[1]["global_step"] == step and restored[0]["epoch"] == restored[1]["epoch"] >= 1
    assert 0 < step < killed["global_step"] and {(0, step), (1, step)} <= saved  # both ranks had saved it
    assert step == max(held[0] & held[1])  # the newest step both ranks hold ...
    assert (step < max(held[0])) == (checkpoints > 1)  # ... older than rank 0's newest when rank 1 lost a save
    assert not list((out / "rank_1" / "checkpoints").glob(".*.tmp"))  # the torn save's temp was removed
    assert str(restored[1]["checkpoint"]).startswith(str(out / "rank_1"))  # rank 1 read its own checkpoint
    ref = [_rank_files(uninterrupted, r) for r in (0, 1)]
    got = [_rank_files(out, r) for r in (0, 1)]
    for r in (0, 1):
        assert_same_tensors(got[r][0], ref[r][0], f"rank {r}'s last checkpoint against the uninterrupted job's")
        for what, g, w in (("local.npz", got[r][1], ref[r][1]), ("model.h5", got[r][2], ref[r][2])):
            assert g.keys() == w.keys() and len(g) >= 38, what
            differ = {k: float(np.max(np.abs(g[k] - w[k]))) for k in w if not np.array_equal(g[k], w[k])}
            assert not differ, f"rank {r}'s {what}: {len(differ)} arrays differ, up to {max(differ.values()):.3g}"
    # the per-rank state is real: the ranks' own statistics differ (different shards), the shared state does not
    assert any(not np.array_equal(ref[0][1][k], ref[1][1][k]) for k in ref[0][1])
    assert_same_tensors(got[1][0], got[0][0], "rank 1's last checkpoint against rank 0's")


def _refused(proc, out, ckpt, saved, world):
    """One ``ERROR:`` line of the recipe naming ``ckpt`` and both rank counts, exit 2, nothing trained."""
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("ERROR:") and str(ckpt) in ln]
    assert proc.returncode == 2 and len(lines) == 1, proc.stdout[-3000:]
    assert f"written by a {saved}-rank job, this job has {world}" in lines[0]
    assert not events.read(out, "step") and not events.read(out, "checkpoint")
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [ckpt.name]  # nothing saved


def test_a_two_rank_checkpoint_is_refused_by_one_process(uninterrupted, noise, tmp_path):
    """The last checkpoint of the 2-rank job (meta.json: world 2), resumed by train_full_1p.sh: one process would
    train with half the global batch on a shard twice the size, so it stops with one line (common.resume)."""
    out = tmp_path / "out"
    shutil.copytree(uninterrupted / "checkpoints" / "epoch_0003", out / "checkpoints" / "epoch_0003")
    proc = subprocess.run(["bash", str(RECIPE / "test" / "train_full_1p.sh"), f"--data_path={noise}",
                           f"--output_path={out}", "--device=cpu", "--train_epochs=4", "--batch_size=2",
                           "--resume=auto"], cwd=RECIPE, env=env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=RUN_TIMEOUT)
    _refused(proc, out, out / "checkpoints" / "epoch_0003", 2, 1)


def test_a_one_process_checkpoint_is_refused_by_two_ranks(one_and_two, mirrored_pairs, tmp_path):
    """The 1-process run's last checkpoint (world 1) under a 2-rank job's --resume=auto: both ranks hold it
    (rank 1 reads the shared folder), agree on it and refuse it; the launcher passes on the exit status 2."""
    one_out = one_and_two[0]
    out = tmp_path / "out"
    shutil.copytree(one_out / "checkpoints" / "epoch_0003", out / "checkpoints" / "epoch_0003")
    proc = subprocess.run(_cmd(mirrored_pairs, tmp_path, "--batch_size=8", "--train_epochs=4", "--no_cutmix",
                               "--resume=auto"), cwd=RECIPE, env=env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=RUN_TIMEOUT)
    _refused(proc, out, out / "checkpoints" / "epoch_0003", 1, 2)


def test_bad_rank_table_fails_before_any_worker_starts(noise, tmp_path):
    cmd = _cmd(noise, tmp_path)
    table = json.loads((tmp_path / "rank_table.json").read_text())
    (tmp_path / "rank_table.json").write_text(json.dumps({**table, "server_count": "2"}))
    proc = subprocess.run(cmd, cwd=RECIPE, env=env(), capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert proc.returncode == 2 and "server_count" in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "out" / "rank_0").exists()
