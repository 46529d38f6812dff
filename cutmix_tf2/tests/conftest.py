"""Shared fixtures: repo paths, the digits data, a small noise dataset, and two concurrent short runs.

The end-to-end run through test/train_performance_1p.sh is also the reference for the resume test: a
second, identical run is started beside it, SIGKILLed in its second epoch, and later resumed.

Time limits are hang guards, at least 3x the longest time measured on a loaded machine (2-core AMD EPYC, AVX2,
load average 12-19 from other test suites): a short training subprocess took up to RUN_MEASURED seconds there.
"""
from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

# tf-keras, not Keras 3: must be set before anything imports TensorFlow
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

RECIPE = Path(__file__).resolve().parents[1]
ROOT = Path(__file__).resolve().parents[2]
for p in (str(ROOT), str(RECIPE)):
    if p not in sys.path:
        sys.path.insert(0, p)

from common import events  # noqa: E402
from common.testing import make_noise  # noqa: E402

# 64 noise images at batch 8: 8 steps per epoch, 2 epochs; one progress line (with its loss) per step
RUN_ARGS = ["--batch_size=8", "--log_steps=1", "--device=cpu"]
EPOCHS = 2
STEPS = 8  # per epoch
RUN_MEASURED = 300  # s: the longest training subprocess of this suite on the loaded machine (see above)
RUN_TIMEOUT = 3 * RUN_MEASURED


def env():
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "MZ_PYTHON": sys.executable, "TF_USE_LEGACY_KERAS": "1", "MPLBACKEND": "Agg"}


def run(cmd, timeout=RUN_TIMEOUT, **kw):
    """Run a command in the recipe folder; stdout and stderr are kept apart."""
    return subprocess.run([str(c) for c in cmd], cwd=RECIPE, env=env(), capture_output=True, text=True,
                          timeout=timeout, **kw)


def train_cmd(*args):
    return [sys.executable, RECIPE / "train.py", *args]


def last_run(out, kind=None):
    """The events of the newest run in ``out`` (from its ``resume`` event on: a resumed run appends to the file)."""
    found = events.read(out)
    starts = [i for i, e in enumerate(found) if e["event"] == "resume"]
    found = found[starts[-1]:] if starts else found
    return [e for e in found if kind is None or e["event"] == kind]


def split_runs(out):
    """The events of ``out`` cut at each ``resume`` event (every run, a resumed one too, starts with one)."""
    runs, current = [], None
    for e in events.read(out):
        if e["event"] == "resume":
            current = []
            runs.append(current)
        if current is not None:
            current.append(e)
    return runs


def ckpt_tensors(path):
    """Every tensor a checkpoint folder holds (weights, BatchNorm statistics, Adam's iteration count and its m
    and v slots), read from the saved files by TensorFlow's checkpoint reader: {name in the file: array}."""
    import tensorflow as tf
    reader = tf.train.load_checkpoint(str(Path(path) / "ckpt"))
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if k != "_CHECKPOINTABLE_OBJECT_GRAPH"}


@functools.lru_cache(maxsize=None)
def _adam_variables():
    """(name, shape) of a freshly built Adam's variables for the recipe's model, in the order they are saved.
    Built once: Keras numbers its layer names per process, so every checkpoint is read with the same names."""
    from src import checkpointing
    from src.model import compile_model, resnet_v1
    model = compile_model(resnet_v1())
    checkpointing.build_optimizer_state(model)
    return tuple((v.name, tuple(v.shape)) for v in model.optimizer.variables)


def adam_slots(tensors):
    """{"m": {variable: array}, "v": {...}, "iterations": int} of ``ckpt_tensors``' Adam entries.

    The file names slots by position (``optimizer/_variables/<k>``); the k-th of a freshly built Adam's variables
    says which slot of which variable (k = 0 is the iteration count, stored as ``optimizer/_iterations``)."""
    variables = _adam_variables()
    slots = {"m": {}, "v": {}, "iterations": int(tensors["optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"])}
    assert variables[0][0].startswith("iteration") and \
        sum(k.startswith("optimizer/_variables/") for k in tensors) == len(variables) - 1
    for k, (full, shape) in enumerate(variables[1:], start=1):
        kind, name = full.split("/", 1)
        value = tensors[f"optimizer/_variables/{k}/.ATTRIBUTES/VARIABLE_VALUE"]
        assert kind in ("m", "v") and value.shape == shape, (k, full, value.shape)
        slots[kind][name] = value
    return slots


def assert_same_tensors(a, b, what):
    """Two ``ckpt_tensors`` dicts hold the same names and bit-identical values."""
    assert a.keys() == b.keys() and len(a) > 280, what
    differ = [k for k in a if not np.array_equal(a[k], b[k])]
    assert not differ, f"{what}: {len(differ)} of {len(a)} tensors differ, e.g. {differ[:3]}"


def step_losses(out, epoch, newest=True):
    """Step losses in ``epoch`` (of the newest run, or of every run in ``out``) as the progress lines print them."""
    found = last_run(out, "step") if newest else events.read(out, "step")
    return [f"{e['loss']:.4f}" for e in found if e["epoch"] == epoch]


@pytest.fixture(scope="session")
def digits():
    d = ROOT / "data" / "digits"
    if not (d / "cifar-10-batches-py" / "test_batch").is_file():
        pytest.fail(f"{d}: the digits dataset is missing: run `make data` in {ROOT}")
    return d


@pytest.fixture(scope="session")
def noise(tmp_path_factory):
    """Random-noise CIFAR-10 files (64 train / 16 test) from the repo's own builder."""
    return make_noise(tmp_path_factory.mktemp("noise"), "cifar10", n_train=64, n_test=16)


@pytest.fixture(scope="session")
def runs(noise, tmp_path_factory):
    """Start the script run and its twin together; kill the twin in epoch 2. Returns a dict of paths/logs."""
    base = tmp_path_factory.mktemp("runs")
    e2e_out, victim_out = base / "e2e", base / "victim"
    e2e_log, victim_log = base / "e2e.stdout", base / "victim.stdout"
    e2e = subprocess.Popen(["bash", str(RECIPE / "test" / "train_performance_1p.sh"), f"--data_path={noise}",
                            f"--output_path={e2e_out}", f"--train_epochs={EPOCHS}", *RUN_ARGS, "--save_samples"],
                           cwd=RECIPE, env=env(), stdout=open(e2e_log, "w"), stderr=subprocess.STDOUT)
    # the same arguments the script passes to train.py
    victim = subprocess.Popen([str(a) for a in train_cmd(f"--data_dir={noise}", f"--output_path={victim_out}",
                                                         f"--epochs={EPOCHS}", "--eval_static=False", "--perf",
                                                         *RUN_ARGS)],
                              cwd=RECIPE, env=env(), stdout=open(victim_log, "w"), stderr=subprocess.STDOUT)
    try:
        # kill once the events show the epoch-1 checkpoint complete and a step of epoch 2 done: mid-epoch 2 (the
        # test checks from the events where the kill really landed; the 7 steps left take seconds, a poll 0.02 s)
        deadline = time.time() + RUN_TIMEOUT
        while not (any(e["epoch"] == 1 for e in events.read(victim_out, "checkpoint"))
                   and any(e["epoch"] == 2 for e in events.read(victim_out, "step"))):
            assert victim.poll() is None, "the run to be killed ended early:\n" + victim_log.read_text()[-2000:]
            assert time.time() < deadline, f"no second epoch within {RUN_TIMEOUT} s"
            time.sleep(0.02)
        victim.send_signal(signal.SIGKILL)
        victim_rc = victim.wait(60)
        e2e_rc = e2e.wait(RUN_TIMEOUT)
    finally:
        for p in (e2e, victim):
            if p.poll() is None:
                p.kill()
                p.wait()
    return {"e2e_rc": e2e_rc, "e2e_out": e2e_out, "e2e_stdout": e2e_log.read_text(), "victim_rc": victim_rc,
            "victim_out": victim_out, "victim_stdout": victim_log.read_text(), "noise": noise}


@pytest.fixture(scope="session")
def e2e(runs):
    """(stdout of test/train_performance_1p.sh, its output folder), after checking it succeeded."""
    assert runs["e2e_rc"] == 0, runs["e2e_stdout"][-3000:]
    return runs["e2e_stdout"], runs["e2e_out"]
