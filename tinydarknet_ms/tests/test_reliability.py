"""Crash safety: SIGKILL + --resume auto ends with the same weights, corrupt checkpoints are skipped,
saves are atomic, and a fixed seed gives identical losses."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import mindspore as ms

from common import events
from common.ms import save_ckpt
from conftest import RECIPE, SMALL, env, python
from src.tinydarknet import TinyDarkNet
from src.utils import checkpoint_series

PREFIX = "train_tinydarknet_imagenet"


def _args(digits, out):
    return [f"--data_path={digits}", f"--output_path={out}", "--batch_size=16", "--train_steps=4",
            "--epoch_size=3", "--save_checkpoint_epochs=1", "--keep_checkpoint_max=2", "--log_every=1",
            "--device_target=CPU", *SMALL]


def _step_losses(out):
    """(epoch, step, loss as the progress line prints it) of every step event in ``out``, oldest first."""
    return [(e["epoch"], e["step"], f"{e['loss']:.4f}") for e in events.read(out, "step")]


def _weights(path):
    return {k: v.asnumpy() for k, v in ms.load_checkpoint(str(path)).items()}


@pytest.fixture(scope="module")
def train_only(digits, tmp_path_factory):
    """The digits train split alone: no val folder, so these runs skip the closing evaluation."""
    root = tmp_path_factory.mktemp("train_only")
    (root / "train").symlink_to(digits / "train")
    return root


@pytest.fixture(scope="module")
def uninterrupted(train_only, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    proc = python("train.py", *_args(train_only, out))
    return out, proc.stdout


def _freeze_mid_epoch_2(proc, out, deadline_s):
    """Stop ``proc``'s process group (SIGSTOP) as soon as its events show epoch 2 under way; returns its events.

    Stopped, not killed, so the events read afterwards are exactly what the run had done at the kill."""
    deadline = time.monotonic() + deadline_s
    while not any(e["epoch"] == 2 for e in events.read(out, "step")):
        assert proc.poll() is None, "run ended before epoch 2 started"
        assert time.monotonic() < deadline, f"no step of epoch 2 within {deadline_s} s"
        time.sleep(0.01)  # polling the events file, not waiting for an order
    os.killpg(proc.pid, signal.SIGSTOP)
    return events.read(out)


def test_sigkill_then_resume_auto_skips_corrupt_and_matches_uninterrupted(train_only, tmp_path, uninterrupted,
                                                                        perf_run):
    """SIGKILL mid-epoch 2 (after epoch 1's checkpoint, before epoch 2's: shown by the run's events), a corrupt
    newer checkpoint planted, ``--resume=auto``: the run restarts from epoch 1's checkpoint, retrains epoch 2's
    steps, and every entry of its checkpoints (weights, momenta, BN statistics, global_step, epoch/step, class
    names) is bit-identical to the uninterrupted run's (np.array_equal): CPU, one data worker, (seed, epoch)-keyed
    data order and augmentation."""
    out = tmp_path / "killed"
    ckdir = out / "checkpoints" / "0"
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen([sys.executable, str(RECIPE / "train.py"), *_args(train_only, out)], cwd=RECIPE,
                                env=env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            # epoch 2 started 31 s after the launch with the machine loaded (load average ~15 on 2 cores)
            before = _freeze_mid_epoch_2(proc, out, deadline_s=300)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # the kill point, from the events the stopped run had written: epoch 1's checkpoint complete, epoch 2 started
    # and not finished (its checkpoint event comes only after the file is complete)
    saved = [(e["epoch"], e["global_step"], e["path"]) for e in before if e["event"] == "checkpoint"]
    assert saved == [(1, 4, str(ckdir / f"{PREFIX}-1_4.ckpt"))], saved
    reached = max(e["global_step"] for e in before if e["event"] == "step")
    assert 4 < reached < 8, reached
    # a newer, corrupt checkpoint (a crash on a file system without atomic rename could leave one) must be
    # passed over: auto-resume orders by the epoch/step in the names, so this one is the newest
    corrupt = ckdir / f"{PREFIX}-2_4.ckpt"
    assert not corrupt.exists()
    corrupt.write_bytes(b"\x00" * 1000)
    n_before = len(events.read(out))

    resumed = python("train.py", *_args(train_only, out), "--resume=auto")
    assert f"skipping {corrupt}" in resumed.stdout
    after = events.read(out)[n_before:]
    (event,) = [e for e in after if e["event"] == "resume"]
    assert event["checkpoint"] == str(ckdir / f"{PREFIX}-1_4.ckpt") and event["epoch"] == 1
    assert event["global_step"] == 4 < reached  # it went back to the checkpoint ...
    retrained = [e["global_step"] for e in after if e["event"] == "step"]
    assert retrained == list(range(5, 13))  # ... and trained epoch 2's steps again, then epoch 3's
    for name in (f"{PREFIX}-2_4.ckpt", f"{PREFIX}-3_4.ckpt"):  # keep_checkpoint_max 2: both runs keep these
        a = _weights(uninterrupted[0] / "checkpoints" / "0" / name)
        b = _weights(ckdir / name)
        assert a.keys() == b.keys(), name
        assert {"moments.conv1.conv.weight", "conv1.bn.moving_mean", "global_step", "zoo_class_names"} <= a.keys()
        for k in a:
            assert np.array_equal(b[k], a[k]), f"{name}: {k} differs from the uninterrupted run's"
    # determinism: three separate runs with seed 1 (killed, uninterrupted, the performance script's) have
    # the same first-epoch per-step losses
    first = _step_losses(out)  # the killed run's events come first
    straight = _step_losses(uninterrupted[0])
    perf = _step_losses(perf_run[0])
    assert len(first) >= 4 and first[:4] == straight[:4] == perf[:4]
    assert len({loss for _, _, loss in straight}) > 1


def test_train_steps_alone_does_not_make_a_performance_run(uninterrupted):
    out, _ = uninterrupted  # --train_steps=4 without --perf
    assert (out / "TinyDarknet_for_MindSpore_bs16_1p_acc.json").is_file() and not list(out.glob("*_perf.*"))


def test_resume_from_a_non_training_checkpoint_fails_cleanly(train_only, tmp_path):
    plain = tmp_path / "net.ckpt"
    ms.save_checkpoint(TinyDarkNet(10), str(plain))
    proc = python("train.py", *_args(train_only, tmp_path / "o"), f"--resume={plain}", check=False)
    assert proc.returncode == 2 and f"ERROR: {plain}: no epoch_num" in proc.stdout


def test_resume_after_a_class_folder_was_renamed_is_refused(train_only, uninterrupted, tmp_path):
    """The checkpoint's head learned label 3 as training's fourth folder; resuming on data where that folder has
    another name would train label 3 on other images without a word. One ERROR line naming the file, exit 2."""
    out, _ = uninterrupted
    ckpt = max(out.rglob(f"{PREFIX}-*.ckpt"), key=lambda p: p.stat().st_mtime)
    names = sorted(p.name for p in (train_only / "train").iterdir())
    renamed = tmp_path / "renamed" / "train"
    renamed.mkdir(parents=True)
    for i, name in enumerate(names):
        (renamed / (f"{name}_renamed" if i == 3 else name)).symlink_to((train_only / "train" / name).resolve())
    proc = python("train.py", *_args(renamed.parent, tmp_path / "o"), f"--resume={ckpt}", check=False)
    errors = [line for line in proc.stdout.splitlines() if line.startswith("ERROR")]
    assert proc.returncode == 2 and errors == [
        f"ERROR: {ckpt}: trained on other classes (label 3 was {names[3]!r}, the training data now has "
        f"{names[3] + '_renamed'!r}); resuming would train its labels on other images"], proc.stdout[-2000:]


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    net = TinyDarkNet(10)
    good = save_ckpt(tmp_path / f"{PREFIX}-1_4.ckpt", net, {"epoch_num": 1})

    def dies_midway(cell, path, **kw):
        with open(path, "wb") as fh:
            fh.write(b"partial")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(ms, "save_checkpoint", dies_midway)
    from common.checkpoint import CheckpointError
    with pytest.raises(CheckpointError, match="disk full"):
        save_ckpt(tmp_path / f"{PREFIX}-2_4.ckpt", net, {"epoch_num": 2})
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == [good.name]  # no temp files, no partial checkpoint
    assert checkpoint_series(tmp_path, PREFIX).find_resume() == good
