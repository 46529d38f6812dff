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


def test_sigkill_then_resume_auto_skips_corrupt_and_matches_uninterrupted(train_only, tmp_path, uninterrupted,
                                                                        perf_run):
    out = tmp_path / "killed"
    ckdir = out / "checkpoints" / "0"
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen([sys.executable, str(RECIPE / "train.py"), *_args(train_only, out)], cwd=RECIPE,
                            env=env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 240
    while not (ckdir / f"{PREFIX}-1_4.ckpt").exists():
        assert proc.poll() is None and time.time() < deadline, "run ended before its first checkpoint"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # mid-epoch 2: the run never saw its end
    proc.wait()
    log.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (ckdir / f"{PREFIX}-3_4.ckpt").exists()
    # a newer, corrupt checkpoint (as a crash on another file system could leave) must be passed over
    corrupt = ckdir / f"{PREFIX}-2_4.ckpt"
    if not corrupt.exists():
        corrupt.write_bytes(b"\x00" * 1000)
        os.utime(corrupt, (time.time() + 5, time.time() + 5))

        resumed = python("train.py", *_args(train_only, out), "--resume=auto")
        assert f"skipping {corrupt}" in resumed.stdout
        event = events.last(out, "resume")
        assert event["checkpoint"].endswith("-1_4.ckpt") and event["epoch"] == 1 and event["global_step"] == 4
    else:  # killed after the second save: resume from it
        resumed = python("train.py", *_args(train_only, out), "--resume=auto")
        assert events.last(out, "resume")["checkpoint"] is not None
    a = _weights(uninterrupted[0] / "checkpoints" / "0" / f"{PREFIX}-3_4.ckpt")
    b = _weights(ckdir / f"{PREFIX}-3_4.ckpt")
    assert a.keys() == b.keys() and "moments.conv1.conv.weight" in a and "global_step" in a
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=0, atol=1e-6, err_msg=k)
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
