"""Shared paths and helpers. Every run here is on CPU with data-loader workers off (2-core budget)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "resnet50_cifar_pt"
DIGITS = ROOT / "data" / "digits"
CONFIGS = RECIPE / "configs" / "resnet"
PERF_CONFIG = CONFIGS / "resnet50_8xb16_cifar100_perf.py"
for p in (RECIPE, ROOT):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))


def env():
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT), e.get("PYTHONPATH", "")])
    e["MZ_PYTHON"] = sys.executable  # the scripts use this interpreter (it has torch + mmcls)
    e.setdefault("MPLBACKEND", "Agg")
    return e


def run(cmd, timeout=3600, **kw):
    """Run a command from the recipe directory; returns CompletedProcess with stdout+stderr in .stdout.

    The default timeout is a hang guard, over 3x the longest of these runs on the 2-core host while other
    suites ran beside it (load ~18): test_reliability's 6-step run took 830 s there (about 40 s on an idle
    host). The learning test passes its own."""
    return subprocess.run([str(c) for c in cmd], cwd=RECIPE, env=env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout, **kw)


def train_cmd(work_dir, *extra, config=PERF_CONFIG, data=None):
    return [sys.executable, RECIPE / "tools" / "train.py", config, "--work-dir", work_dir,
            "--data-path", data or DIGITS, "--device", "cpu", *extra]


def entry(name):
    """``tools/<name>.py`` as its ``__main__`` runs it, in this process (saves a torch + mmcls start-up per
    call): ``argv -> exit status`` through ``common.cli.guard``, the guard of ``cli.run``."""
    import importlib.util
    from common import cli
    spec = importlib.util.spec_from_file_location(f"r50_tools_{name}", RECIPE / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return lambda argv: cli.guard(mod.main, argv, errors=mod.ERRORS)


@pytest.fixture(scope="session")
def digits():
    if not (DIGITS / "cifar-100-python" / "train").is_file():
        pytest.fail(f"{DIGITS}/cifar-100-python not found: run `make data` in {ROOT}")
    return DIGITS


@pytest.fixture(scope="session")
def noise(tmp_path_factory):
    from common.testing import make_noise
    return make_noise(tmp_path_factory.mktemp("noise"), "cifar100", n_train=40, n_test=12)
