"""Shared fixtures: the digits data (copied, so a concurrent `make data` cannot pull files away mid-run),
and helpers that run the recipe's real entry points in subprocesses, as a user would."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "tinydarknet_ms"
DIGITS = ROOT / "data" / "digits"
sys.path[:0] = [str(RECIPE), str(ROOT)]

# small, fast settings for the 10-class digits data on a CPU
SMALL = ["--num_classes=10", "--image_size=32", "--num_parallel_workers=1"]


def env():
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT), e.get("PYTHONPATH", "")])
    e["MZ_PYTHON"] = sys.executable
    e.pop("MODELZOO_START_TIME", None)
    e["GLOG_v"] = "3"  # MindSpore: errors only
    return e


# Hang guards, >= 3x the wall time measured with the machine loaded (load average 15-25 on 2 cores): the
# performance-script run took over 300 s there, the learning run 209-601 s; other single runs under 100 s.
RUN_TIMEOUT = 1200
LEARN_TIMEOUT = 1800


def run(cmd, timeout=RUN_TIMEOUT, check=True, cwd=None):
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd or RECIPE, env=env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} exited {proc.returncode}:\n{proc.stdout[-4000:]}")
    return proc


def python(script, *args, **kw):
    return run([sys.executable, RECIPE / script, *args], **kw)


@pytest.fixture(scope="session")
def digits(tmp_path_factory):
    src = DIGITS / "imagenet"
    if not (src / "train").is_dir() or not (src / "val").is_dir():
        pytest.fail(f"{src}: digits data missing: run make data")
    dst = tmp_path_factory.mktemp("digits") / "imagenet"
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="session")
def perf_run(digits, tmp_path_factory):
    """One short run through test/train_performance_1p.sh, shared by the banner, eval and export tests."""
    out = tmp_path_factory.mktemp("perf")
    proc = run(["bash", RECIPE / "test" / "train_performance_1p.sh", f"--data_path={digits.parent}",
                f"--output_path={out}", "--batch_size=16", "--train_steps=4", "--device=cpu", "--log_every=1",
                "--tensorboard=True",
                *SMALL],
               cwd=tmp_path_factory.mktemp("cwd"))
    return out, proc.stdout


@pytest.fixture(scope="session")
def learn_run(digits, tmp_path_factory):
    """The demo command: test/train_full_1p.sh for 3 epochs on digits (fixed budget: 279 steps of 16).

    lr 0.01: the original's 0.1 is for a global batch of 1024 (8 x 128); batch 16 needs a smaller step.
    """
    out = tmp_path_factory.mktemp("learn")
    proc = run(["bash", RECIPE / "test" / "train_full_1p.sh", f"--data_path={digits.parent}",
                f"--output_path={out}", "--train_epochs=3", "--batch_size=16", "--lr_init=0.01", "--device=cpu",
                *SMALL],
               timeout=LEARN_TIMEOUT)
    return out, proc.stdout
