"""--seed determinism and SIGKILL + --resume auto, both against the session's uninterrupted run (conftest
``trained``: 3 steps per epoch, 2 epochs, a checkpoint after each epoch).

One run of the same seed is SIGKILLed at a point the events show to be mid-epoch 2, after the epoch-1
checkpoint; until then it must repeat the reference bit for bit (losses and the checkpoint). A newer but
truncated checkpoint is planted; ``--resume auto`` must report and skip it, resume from the epoch-1
checkpoint, retrain the steps after it and end with the reference's variables, Momentum slots and global step.
"""
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from common import events
from conftest import RECIPE, TRAIN_ARGS, env, python

STEPS_PER_EPOCH = 3  # 48 noise images at batch 16 (conftest)


def _losses(out, pid=None):
    """{global step: loss} from the ``step`` events of ``out`` (of process ``pid`` only, if given)."""
    return {e["global_step"]: e["loss"] for e in events.read(out, "step") if pid is None or e["pid"] == pid}


def _variables(prefix):
    """Every tensor of a Saver checkpoint: weights, biases, Momentum slots and the global step."""
    reader = tf.train.load_checkpoint(str(prefix))
    return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()}


def _assert_same_variables(got, want):
    assert got.keys() == want.keys()
    # 146 weights and biases and the global step ("Variable"), and a Momentum slot for each weight and bias
    assert len([n for n in want if "Momentum" not in n]) == 147 and len(want) == 147 + 146
    assert len([n for n in want if n.endswith("/Momentum")]) == 146
    assert "Variable" in want and want["Variable"].dtype.kind == "i"
    different = [n for n in want if not np.array_equal(got[n], want[n])]
    assert not different, f"{len(different)} of {len(want)} differ, e.g. {different[:5]}"


def _checkpoint_at(out, global_step, pid=None):
    """The Saver prefix of the ``checkpoint`` event at ``global_step`` (of process ``pid``, if given)."""
    found = [e["path"] for e in events.read(out, "checkpoint")
             if e["global_step"] == global_step and (pid is None or e["pid"] == pid)]
    assert found, f"no checkpoint event at global step {global_step} in {out}"
    return found[-1]


@pytest.fixture(scope="module")
def killed_and_resumed(trained, noise, tmp_path_factory):
    """The same run as ``trained``, SIGKILLed mid-epoch 2 (after the epoch-1 checkpoint), then resumed."""
    out = tmp_path_factory.mktemp("killed")
    args = [f"--data_path={noise}", f"--output_path={out}", *TRAIN_ARGS]
    proc = subprocess.Popen([sys.executable, RECIPE / "train.py", *args], cwd=RECIPE, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # kill as soon as the events show a step after the first checkpoint: the next checkpoint is two steps
        # and a validation away, so the kill lands mid-epoch (the test checks that from the events)
        deadline = time.monotonic() + 900
        while proc.poll() is None and time.monotonic() < deadline:
            saved = events.read(out, "checkpoint")
            if saved and any(e["global_step"] > saved[0]["global_step"] for e in events.read(out, "step")):
                break
            time.sleep(0.02)
        proc.kill()
        returncode = proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    before_kill = events.read(out)
    # what the kill left: the killed run's own checkpoints, read now (the resumed run prunes old step folders)
    left = {e["global_step"]: _variables(e["path"]) for e in before_kill if e["event"] == "checkpoint"}
    # a newer (by global step, the order auto-resume uses) but truncated checkpoint must be reported and skipped;
    # its folder is made the OLDEST on disk, so a resume that went by file times would never come to it
    ckpt_dirs = sorted((out / "ckpt").glob("step_*"))
    corrupt = out / "ckpt" / "step_000000999"
    if ckpt_dirs:
        shutil.copytree(ckpt_dirs[-1], corrupt)
        data = next(corrupt.glob("*.data-*"))
        data.write_bytes(data.read_bytes()[:1000])
        old = time.time() - 3600
        os.utime(corrupt, (old, old))
    _, stdout, _ = python("train.py", *args, "--resume=auto", "--tensorboard")
    return dict(out=out, pid=proc.pid, returncode=returncode, before_kill=before_kill, left=left, stdout=stdout)


def test_same_seed_gives_identical_losses(trained, killed_and_resumed):
    """Two processes with --seed (TF op determinism on): the killed run repeats the reference's steps, loss for
    loss, and its epoch-1 checkpoint holds the reference's variables bit for bit."""
    reference, _ = trained
    run = killed_and_resumed
    ref, killed = _losses(reference), _losses(run["out"], run["pid"])
    assert sorted(ref) == list(range(1, 2 * STEPS_PER_EPOCH + 1))
    assert len(killed) >= STEPS_PER_EPOCH + 1 and sorted(killed) == list(range(1, len(killed) + 1))
    assert all(killed[s] == ref[s] for s in killed), {s: (killed[s], ref[s]) for s in killed}
    assert STEPS_PER_EPOCH in run["left"]
    _assert_same_variables(run["left"][STEPS_PER_EPOCH], _variables(_checkpoint_at(reference, STEPS_PER_EPOCH)))


def test_sigkill_then_resume_auto_ends_with_the_same_weights(trained, killed_and_resumed):
    reference, _ = trained
    run, out = killed_and_resumed, killed_and_resumed["out"]
    # the kill point, from the killed run's events: after its epoch-1 checkpoint, mid-epoch 2
    assert run["returncode"] == -9, "the run finished before it could be killed"
    saved = [e["global_step"] for e in run["before_kill"] if e["event"] == "checkpoint"]
    reached = max(e["global_step"] for e in run["before_kill"] if e["event"] == "step")
    assert saved == [STEPS_PER_EPOCH] and STEPS_PER_EPOCH < reached < 2 * STEPS_PER_EPOCH, (saved, reached)
    # resumed from that checkpoint, the planted newer one reported and skipped
    assert re.search(r"resume: skipping .*step_000000999", run["stdout"]), run["stdout"][-2000:]
    starts = events.read(out, "resume")
    assert [e["pid"] for e in starts] == [run["pid"], starts[-1]["pid"]] and starts[0]["checkpoint"] is None
    resumed = starts[-1]
    assert resumed["checkpoint"] == _checkpoint_at(out, STEPS_PER_EPOCH, run["pid"]), resumed
    assert resumed["global_step"] == STEPS_PER_EPOCH < reached and resumed["epoch"] == 1, (resumed, reached)
    # the steps after the checkpoint were trained again, with the reference's losses
    ref, again = _losses(reference), _losses(out, resumed["pid"])
    assert sorted(again) == list(range(STEPS_PER_EPOCH + 1, 2 * STEPS_PER_EPOCH + 1)), sorted(again)
    assert all(again[s] == ref[s] for s in again), {s: (again[s], ref[s]) for s in again}
    # everything the final checkpoint holds equals the uninterrupted run's, bit for bit
    final = _checkpoint_at(out, 2 * STEPS_PER_EPOCH, resumed["pid"])
    _assert_same_variables(_variables(final), _variables(_checkpoint_at(reference, 2 * STEPS_PER_EPOCH)))
    # the original's path (a link to the newest checkpoint) holds the same
    _assert_same_variables(_variables(out / "cspdarknet53.ckpt"), _variables(final))
    assert list((out / "logs" / "train").glob("events.out.tfevents.*"))
