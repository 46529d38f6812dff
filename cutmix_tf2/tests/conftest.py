"""Shared fixtures: repo paths, the digits data, a small noise dataset, and one end-to-end script run."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# tf-keras, not Keras 3: must be set before anything imports TensorFlow
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

RECIPE = Path(__file__).resolve().parents[1]
ROOT = Path(__file__).resolve().parents[2]
for p in (str(ROOT), str(RECIPE)):
    if p not in sys.path:
        sys.path.insert(0, p)


def env():
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "MZ_PYTHON": sys.executable, "TF_USE_LEGACY_KERAS": "1", "MPLBACKEND": "Agg"}


def run(cmd, timeout=420, **kw):
    """Run a command in the recipe folder; stdout and stderr are kept apart."""
    return subprocess.run([str(c) for c in cmd], cwd=RECIPE, env=env(), capture_output=True, text=True,
                          timeout=timeout, **kw)


def train_cmd(*args):
    return [sys.executable, RECIPE / "train.py", *args]


@pytest.fixture(scope="session")
def digits():
    d = ROOT / "data" / "digits"
    if not (d / "cifar-10-batches-py" / "test_batch").is_file():
        pytest.fail(f"{d}: the digits dataset is missing: run `make data` in {ROOT}")
    return d


@pytest.fixture(scope="session")
def noise(tmp_path_factory):
    """Random-noise CIFAR-10 files (64 train / 16 test) from the repo's own builder."""
    out = tmp_path_factory.mktemp("noise")
    proc = run([sys.executable, ROOT / "ci" / "make_data.py", "--noise", "--out", out, "--n_train", "64",
                "--n_test", "16", "--formats", "cifar10"], timeout=120)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="session")
def e2e(digits, tmp_path_factory):
    """One short run of test/train_performance_1p.sh on the digits: (completed process, output folder)."""
    out = tmp_path_factory.mktemp("e2e")
    proc = run(["bash", RECIPE / "test" / "train_performance_1p.sh", f"--data_path={digits}",
                f"--output_path={out}", "--train_epochs=2", "--train_steps=4", "--device=cpu", "--log_steps=2",
                "--save_samples", "--tensorboard"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, out
