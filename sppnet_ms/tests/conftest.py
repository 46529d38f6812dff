"""Shared paths and helpers for the sppnet_ms tests (CPU, MindSpore graph mode)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / 'sppnet_ms'
DIGITS = ROOT / 'data' / 'digits'

for p in (str(RECIPE), str(ROOT)):
    if p not in sys.path:
        sys.path.insert(0, p)

from common.testing import make_noise  # noqa: E402  (after the path set-up above)


def digits_imagenet():
    path = DIGITS / 'imagenet'
    if not (path / 'train').is_dir() or not (path / 'val').is_dir():
        pytest.fail(f"{path}: digits data missing - run make data")
    return path


def env():
    e = dict(os.environ)
    e['PYTHONPATH'] = str(ROOT) + os.pathsep + e.get('PYTHONPATH', '')
    e['MZ_PYTHON'] = sys.executable
    e.setdefault('GLOG_v', '3')  # keep MindSpore's C++ warnings out of the logs the tests read
    return e


def run(cmd, timeout=300, **kw):
    """Run a command with the repo on PYTHONPATH; returns the CompletedProcess (stdout+stderr merged)."""
    return subprocess.run([str(c) for c in cmd], cwd=kw.pop('cwd', RECIPE), env=kw.pop('env', env()),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout, **kw)


def error_lines(text):
    return [line for line in text.splitlines() if line.startswith('ERROR')]


def ckpt_entries(path):
    """Everything a checkpoint file holds, read by the test: tensors (weights, momenta, the optimiser's global_step,
    metadata such as the class names) as numpy arrays, string metadata as it is."""
    import mindspore as ms
    return {k: (v.asnumpy() if hasattr(v, 'asnumpy') else v) for k, v in ms.load_checkpoint(str(path)).items()}


def assert_same_checkpoint(path_a, path_b):
    """The two files hold the same entries, every one equal bit for bit (np.array_equal); returns the entries."""
    import numpy as np
    a, b = ckpt_entries(path_a), ckpt_entries(path_b)
    assert a.keys() == b.keys(), (path_a, path_b)
    assert {'fc1.weight', 'moments.fc1.weight', 'moments.conv1.weight', 'global_step', 'epoch'} <= a.keys()
    for name in sorted(a):
        if isinstance(a[name], np.ndarray):
            assert a[name].shape == b[name].shape and np.array_equal(a[name], b[name]), (name, path_a, path_b)
        else:
            assert a[name] == b[name], (name, path_a, path_b)
    return a, b


@pytest.fixture(scope='session')
def noise_imagenet(tmp_path_factory):
    """Random-noise JPEG folders (40 train / 12 val, 10 classes) built by the repo's own noise builder."""
    return make_noise(tmp_path_factory.mktemp('noise'), 'imagenet', 40, 12) / 'imagenet'


# The reference run of the reliability tests (test_resume.py) and of the class-map test (test_classes.py): ZFNet at
# 56 px on the noise folders, 3 steps x 3 epochs, no dropout (its mask cannot be resumed), no evaluation.
REFERENCE_STEPS = 3
REFERENCE_FLAGS = ['--train_model=zfnet', '--image_size=56', '--batch_size=4', f'--sink_size={REFERENCE_STEPS}',
                   '--epoch_size=3', '--keep_prob=1', '--run_eval=false', '--keep_checkpoint_max=5',
                   '--device_target=CPU', '--seed=7']
# one such run took 100-200 s with the 2 cores shared by five test suites; the limit only catches a hang
RUN_TIMEOUT = 900


def reference_cmd(data, ckpt, *extra):
    """train.py with the reference flags; ``extra`` flags come last (argparse: the last value of a flag wins)."""
    return [sys.executable, RECIPE / 'train.py', f'--train_path={data}', f'--eval_path={data}',
            f'--ckpt_path={ckpt}', *REFERENCE_FLAGS, *extra]


@pytest.fixture(scope='session')
def uninterrupted(noise_imagenet, tmp_path_factory):
    """The reference run, uninterrupted: its ckpt folder (zfnet-1..3.ckpt, summary.csv, events.jsonl)."""
    ckpt = tmp_path_factory.mktemp('full')
    proc = run(reference_cmd(noise_imagenet, ckpt), timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-3000:]
    return ckpt
