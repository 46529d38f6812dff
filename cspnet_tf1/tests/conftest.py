"""Shared fixtures: repo paths, the digits data, small noise datasets, a runner for the recipe's entries, and
the one short training run that the end-to-end, reliability and distributed tests all start from."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "cspnet_tf1"
for p in (str(ROOT), str(RECIPE)):
    if p not in sys.path:
        sys.path.insert(0, p)

# as the entry points do, before this process imports TensorFlow: in-process recomputations then use the same
# (oneDNN or not) kernels as the runs they check
from common.tf_onednn import choose_tf_onednn_opts  # noqa: E402
from common.testing import make_noise  # noqa: E402

choose_tf_onednn_opts()
DIGITS = ROOT / "data" / "digits"


def env():
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "TF_CPP_MIN_LOG_LEVEL": "3", "MZ_PYTHON": sys.executable, "MPLBACKEND": "Agg"}


def run(args, timeout=600, check=True, cwd=RECIPE):
    """Run a command of the recipe; returns (returncode, stdout, stderr)."""
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.returncode, proc.stdout, proc.stderr


def python(script, *args, **kw):
    return run([sys.executable, RECIPE / script, *args], **kw)


@pytest.fixture(scope="session")
def digits():
    if not (DIGITS / "cifar-10-batches-py" / "test_batch").is_file():
        pytest.fail(f"{DIGITS}: digits dataset missing: run `make data` in {ROOT}")
    return DIGITS


@pytest.fixture(scope="session")
def noise(tmp_path_factory):
    """48 train / 32 test noise images: 3 steps per epoch and 2 test batches at batch 16."""
    return make_noise(tmp_path_factory.mktemp("noise"), "cifar10", 48, 32)


# the session's one short run (noise data, 48 train images at batch 16: 3 steps per epoch, 2 epochs, so the
# original's FPS rule has a steady epoch): end-to-end checks, the reference of the resume test and the
# checkpoint the distributed test resumes from. train.py with TRAIN_ARGS repeats it exactly (--seed).
TRAIN_ARGS = ("--epochs=2", "--batch_size=16", "--seed=3", "--DISPLAY_STEP=1", "--device=cpu")


@pytest.fixture(scope="session")
def trained(tmp_path_factory, noise):
    out = tmp_path_factory.mktemp("e2e")
    _, stdout, _ = run(["bash", RECIPE / "test" / "train_performance_1p.sh", f"--data_path={noise}",
                        f"--output_path={out}", "--train_epochs=2", "--batch_size=16", "--device=cpu",
                        "--seed=3", "--DISPLAY_STEP=1"], cwd="/")
    return out, stdout
