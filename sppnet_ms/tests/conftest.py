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


@pytest.fixture(scope='session')
def noise_imagenet(tmp_path_factory):
    """Random-noise JPEG folders (40 train / 12 val, 10 classes) built by the repo's own noise builder."""
    return make_noise(tmp_path_factory.mktemp('noise'), 'imagenet', 40, 12) / 'imagenet'
