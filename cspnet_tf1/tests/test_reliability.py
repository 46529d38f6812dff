"""--seed determinism, SIGKILL + --resume auto (same final weights), a corrupt checkpoint skipped, TensorBoard."""
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import RECIPE, env, python


def _args(data, out, *extra):
    return [f"--data_path={data}", f"--output_path={out}", "--epochs=3", "--batch_size=16", "--seed=5",
            "--DISPLAY_STEP=1", "--device=cpu", *extra]


def _losses(stdout):
    return [float(v) for v in re.findall(r"--- Loss: (\S+)", stdout)]


def _weights(prefix):
    reader = tf.train.load_checkpoint(str(prefix))
    return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map() if "Momentum" not in n}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, noise):
    out = tmp_path_factory.mktemp("uninterrupted")
    _, stdout, _ = python("train.py", *_args(noise, out))
    return out, stdout


def test_same_seed_gives_identical_losses(reference, noise, tmp_path):
    _, stdout, _ = python("train.py", *_args(noise, tmp_path, "--tensorboard"))
    first, second = _losses(reference[1]), _losses(stdout)
    assert len(first) == 9 and first == second
    assert list((tmp_path / "logs" / "train").glob("events.out.tfevents.*"))


def test_sigkill_then_resume_auto_ends_with_the_same_weights(reference, noise, tmp_path):
    proc = subprocess.Popen([sys.executable, RECIPE / "train.py", *_args(noise, tmp_path)], cwd=RECIPE, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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

    _, stdout, _ = python("train.py", *_args(noise, tmp_path, "--resume=auto"))
    assert re.search(r"resume: skipping .*step_000000999", stdout)
    assert re.search(r"resume: restored .*step_0000000(03|06)", stdout)
    ref, resumed = _weights(reference[0] / "cspdarknet53.ckpt"), _weights(tmp_path / "cspdarknet53.ckpt")
    assert ref.keys() == resumed.keys() and len(ref) == 147
    assert all(np.array_equal(ref[k], resumed[k]) for k in ref)
