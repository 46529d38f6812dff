"""Resume after SIGKILL, seed determinism across processes, atomic and verified checkpoints."""
import os
import signal
import subprocess

import h5py
import numpy as np
import pytest

from common import cli
from conftest import (EPOCHS, RECIPE, RUN_ARGS, RUN_TIMEOUT, STEPS, assert_same_tensors, ckpt_tensors, env, last_run,
                      split_runs, step_losses, train_cmd)


def _weights(h5):
    out = {}
    with h5py.File(h5, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def test_seed_gives_identical_losses_in_two_processes(runs, e2e):
    _, out = e2e
    first = step_losses(out, 1)
    # every run of the victim's folder: its resumed run (another test) appends epoch 2 only
    assert len(first) == 8 and step_losses(runs["victim_out"], 1, newest=False) == first


def test_sigkill_mid_training_then_resume_auto_ends_with_the_same_weights(runs, e2e):
    """The twin run was SIGKILLed in epoch 2 (conftest); resumed with --resume auto it must end bit-identical to
    the uninterrupted run: every tensor of the last checkpoint (weights, BatchNorm statistics, Adam's m and v and
    iteration count) and the final model.h5. Holds exactly on CPU: every random draw is keyed by (seed, epoch,
    batch) and the resumed run restores the whole Adam state (kill trials: 50 of 50 bit-identical)."""
    _, ref_out = e2e
    out = runs["victim_out"]
    assert runs["victim_rc"] == -signal.SIGKILL and not (out / "model.h5").exists()
    resumed = subprocess.run([str(a) for a in train_cmd(
        f"--data_dir={runs['noise']}", f"--output_path={out}", f"--epochs={EPOCHS}", "--eval_static=False", "--perf",
        *RUN_ARGS, "--resume=auto")], cwd=RECIPE, env=env(), capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    # where the kill landed, from the killed run's own events: after the epoch-1 checkpoint, inside epoch 2
    killed, again = split_runs(out)
    assert [(e["epoch"], e["global_step"]) for e in killed if e["event"] == "checkpoint"] == [(1, STEPS)]
    last = [e for e in killed if e["event"] == "step"][-1]
    assert last["epoch"] == 2 and 1 <= last["step"] < STEPS, f"the kill did not land mid-epoch 2: {last}"
    [resume] = last_run(out, "resume")
    assert str(resume["checkpoint"]).endswith("epoch_0001") and resume["epoch"] == 1 and resume["global_step"] == 8
    # the resumed run went back to the checkpoint and trained the lost steps again
    assert resume["global_step"] < last["global_step"]
    redone = [e["global_step"] for e in again if e["event"] == "step"]
    assert redone == list(range(STEPS + 1, EPOCHS * STEPS + 1))
    assert step_losses(out, 2) == step_losses(ref_out, 2)
    assert last_run(out, "finished")[-1]["global_step"] == 16  # the job's step count, not the resumed run's 8
    ref_w, run_w = _weights(ref_out / "model.h5"), _weights(out / "model.h5")
    assert ref_w.keys() == run_w.keys() and len(ref_w) > 60
    for k in ref_w:
        np.testing.assert_array_equal(run_w[k], ref_w[k], err_msg=k)
    final = f"checkpoints/epoch_{EPOCHS:04d}"
    ref_ck, run_ck = ckpt_tensors(ref_out / final), ckpt_tensors(out / final)
    assert int(run_ck["optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"]) == EPOCHS * STEPS
    assert_same_tensors(run_ck, ref_ck, f"{final} of the resumed run against the uninterrupted run's")
    rows = (out / "summary.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2"]


@pytest.fixture
def small_model():
    import tf_keras as keras

    from src.model import resnet_v1
    keras.utils.set_random_seed(0)
    model = resnet_v1()
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    x = np.random.default_rng(0).random((8, 32, 32, 3), dtype=np.float32)
    y = np.eye(10, dtype=np.float32)[np.arange(8)]
    return model, x, y


def test_restore_brings_back_weights_and_optimiser_state(small_model, tmp_path):
    from src import checkpointing
    from src.model import resnet_v1
    model, x, y = small_model
    model.fit(x, y, epochs=2, verbose=0)
    path = checkpointing.save(tmp_path, 1, model)
    other = resnet_v1()
    other.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    assert checkpointing.restore(path, other) == 1
    assert int(other.optimizer.iterations.numpy()) == 2
    for a, b in zip(model.get_weights(), other.get_weights()):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(model.optimizer.variables, other.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_auto_resume_skips_a_truncated_checkpoint_and_says_so(small_model, tmp_path):
    from src import checkpointing
    model, _, _ = small_model
    checkpointing.save(tmp_path, 1, model)
    newest = checkpointing.save(tmp_path, 2, model)
    data = next(newest.glob("ckpt.data-*"))
    data.write_bytes(data.read_bytes()[:1000])
    said = []
    assert checkpointing.find_latest(tmp_path, log=said.append).name == "epoch_0001"
    assert len(said) == 1 and "epoch_0002" in said[0] and "skipping" in said[0]


def test_auto_resume_takes_the_highest_epoch_whatever_the_file_times(small_model, tmp_path):
    """Checkpoints are ordered by the epoch number in their name, not by modification time (a copied or touched
    older checkpoint must not win, two saves in one clock tick must not tie) nor by the name's text (epoch_10000
    sorts before epoch_9999)."""
    from src import checkpointing
    model, _, _ = small_model
    for epoch in (2, 10000, 9999):
        checkpointing.save(tmp_path, epoch, model, keep=5)
    future = os.stat(tmp_path / "epoch_10000").st_mtime + 3600
    for name in ("epoch_0002", "epoch_9999"):
        os.utime(tmp_path / name, (future, future))
    said = []
    assert checkpointing.find_latest(tmp_path, log=said.append).name == "epoch_10000" and not said
    checkpointing.save(tmp_path, 10001, model, keep=2)  # pruning keeps the two highest epochs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_10000", "epoch_10001"]


def test_keeps_only_the_newest_checkpoints(small_model, tmp_path):
    from src import checkpointing
    model, _, _ = small_model
    for epoch in range(1, 5):
        checkpointing.save(tmp_path, epoch, model, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_0003", "epoch_0004"]


def test_resume_from_a_corrupt_checkpoint_fails_with_one_line(small_model, noise, tmp_path, capsys):
    import train
    from src import checkpointing
    model, _, _ = small_model
    bad = checkpointing.save(tmp_path / "ck", 1, model)
    (bad / "ckpt.index").write_bytes(b"garbage")
    rc = cli.guard(train.main, [f"--data_dir={noise}", f"--output_path={tmp_path / 'out'}", f"--resume={bad}",
                                "--device=cpu", "--epochs=2"], errors=train.ERRORS)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "ckpt.index" in err[0] and "corrupt" in err[0]
