"""--seed determinism and SIGKILL + --resume auto, both against the session's uninterrupted run (conftest
``trained``): the killed run's steps, then the resumed run's, give the same losses, and the same final weights;
a corrupt newer checkpoint is skipped; --tensorboard writes event files."""
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import tensorflow as tf

from common import events
from conftest import RECIPE, TRAIN_ARGS, env, python


def _losses(out, pid=None):
    """{global step: loss} from the ``step`` events of ``out`` (of process ``pid`` only, if given)."""
    return {e["global_step"]: e["loss"] for e in events.read(out, "step") if pid is None or e["pid"] == pid}


def _weights(prefix):
    reader = tf.train.load_checkpoint(str(prefix))
    return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map() if "Momentum" not in n}


def test_same_seed_and_sigkill_then_resume_auto_reproduce_the_uninterrupted_run(trained, noise, tmp_path):
    reference, _ = trained
    args = [f"--data_path={noise}", f"--output_path={tmp_path}", *TRAIN_ARGS]
    log = tmp_path / "killed.log"
    with open(log, "w") as fh:  # unbuffered, so the lines printed before the kill are all there
        proc = subprocess.Popen([sys.executable, RECIPE / "train.py", *args], cwd=RECIPE,
                                env={**env(), "PYTHONUNBUFFERED": "1"}, stdout=fh, stderr=subprocess.STDOUT)
        first_ckpt = tmp_path / "ckpt" / "step_000000003" / "state.json"
        deadline = time.time() + 600
        while not first_ckpt.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    # a newer but truncated checkpoint must be reported and skipped
    corrupt = tmp_path / "ckpt" / "step_000000999"
    shutil.copytree(first_ckpt.parent, corrupt)
    data = next(corrupt.glob("*.data-*"))
    data.write_bytes(data.read_bytes()[:1000])
    newer = time.time() + 60  # auto-resume tries the newest first
    os.utime(corrupt, (newer, newer))

    _, stdout, _ = python("train.py", *args, "--resume=auto", "--tensorboard")
    assert re.search(r"resume: skipping .*step_000000999", stdout)
    starts = events.read(tmp_path, "resume")
    assert [e["pid"] for e in starts] == [proc.pid, starts[-1]["pid"]] and starts[0]["checkpoint"] is None
    assert re.search(r"step_0000000(03|06)/cspdarknet53\.ckpt$", starts[-1]["checkpoint"])
    assert starts[-1]["global_step"] in (3, 6) and starts[-1]["epoch"] == starts[-1]["global_step"] // 3
    # same seed: the killed run's steps repeat the reference's; resumed: so do the remaining ones
    ref, killed, resumed = _losses(reference), _losses(tmp_path, proc.pid), _losses(tmp_path, starts[-1]["pid"])
    assert sorted(ref) == list(range(1, 7)) and 1 in killed and 3 in killed
    assert all(killed[s] == ref[s] for s in killed) and all(resumed[s] == ref[s] for s in resumed)
    assert sorted(set(killed) | set(resumed)) == list(range(1, 7))
    want, got = _weights(reference / "cspdarknet53.ckpt"), _weights(tmp_path / "cspdarknet53.ckpt")
    assert want.keys() == got.keys() and len(want) == 147
    assert all(np.array_equal(want[k], got[k]) for k in want)
    assert list((tmp_path / "logs" / "train").glob("events.out.tfevents.*"))
