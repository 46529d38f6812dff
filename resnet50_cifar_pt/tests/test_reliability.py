"""Resume after SIGKILL, seed determinism, corrupt checkpoints, bad inputs (one-line errors, no output)."""
from __future__ import annotations

import pickle
import signal
import subprocess
import time

import pytest
import torch

from common import events
from common.checkpoint import CheckpointError
from conftest import RECIPE, entry, env, run, train_cmd

TINY = ["--seed", "3", "--no-validate", "--train-steps", "2",
        "--cfg-options", "data.samples_per_gpu=4", "data.workers_per_gpu=0", "runner.max_epochs=3"]


def _losses(work_dir):
    """(epoch, step) -> loss of the "step" events, the last run's where runs repeat a step; at the 5 decimals
    of mmcv's log, which the determinism assertion was made against."""
    return {(e["epoch"], e["step"]): round(e["loss"], 5) for e in events.read(work_dir, "step")}


@pytest.fixture(scope="module")
def uninterrupted(digits, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    r = run(train_cmd(out, *TINY))
    assert r.returncode == 0, r.stdout[-3000:]
    return out


def test_sigkill_mid_epoch_then_resume_auto_ends_with_the_same_weights(uninterrupted, tmp_path):
    proc = subprocess.Popen([str(c) for c in train_cmd(tmp_path, *TINY)], cwd=RECIPE, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 1200
        while time.time() < deadline and proc.poll() is None:
            # kill once epoch 3 has started: epoch_2.pth is complete and one step of epoch 3 is done
            if (3, 1) in _losses(tmp_path):
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.05)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == -signal.SIGKILL, f"the run was not killed mid-training (exit {rc})"
    assert not (tmp_path / "epoch_3.pth").exists() and (tmp_path / "epoch_2.pth").exists()

    r = run(train_cmd(tmp_path, *TINY, "--resume", "auto"))
    assert r.returncode == 0, r.stdout[-3000:]
    resumed = events.last(tmp_path, "resume")
    assert resumed["checkpoint"] == str((tmp_path / "epoch_2.pth").resolve())
    assert (resumed["epoch"], resumed["global_step"]) == (2, 4)
    assert events.read(tmp_path, "resume")[0]["checkpoint"] is None  # the killed run started fresh

    a = torch.load(uninterrupted / "epoch_3.pth", map_location="cpu", weights_only=True)
    b = torch.load(tmp_path / "epoch_3.pth", map_location="cpu", weights_only=True)
    assert a["meta"]["iter"] == b["meta"]["iter"] == 6
    for k, v in a["state_dict"].items():
        assert torch.allclose(v.float(), b["state_dict"][k].float(), rtol=0, atol=1e-6), k
    for i, st in a["optimizer"]["state"].items():
        assert torch.allclose(st["momentum_buffer"], b["optimizer"]["state"][i]["momentum_buffer"], atol=1e-6)

    # --seed determinism: the killed run and the uninterrupted one logged the same loss at every step
    la, lb = _losses(uninterrupted), _losses(tmp_path)
    assert len(la) == 6 and la == lb


def test_auto_resume_skips_a_truncated_checkpoint_and_says_so(uninterrupted, tmp_path):
    from mmcls_ext.checkpoint import find_resume
    for n in (1, 2):
        (tmp_path / f"epoch_{n}.pth").write_bytes((uninterrupted / f"epoch_{n}.pth").read_bytes())
    data = (uninterrupted / "epoch_3.pth").read_bytes()
    (tmp_path / "epoch_3.pth").write_bytes(data[: len(data) // 2])
    messages = []
    assert find_resume(tmp_path, log=messages.append) == tmp_path / "epoch_2.pth"
    assert len(messages) == 1 and "epoch_3.pth" in messages[0] and "skipping" in messages[0]


def test_checkpoint_that_would_run_code_is_refused(tmp_path):
    from mmcls_ext.checkpoint import safe_load

    class Boom:
        def __reduce__(self):
            import os
            return (os.system, ("touch /tmp/r50_pwned_by_checkpoint",))

    bad = tmp_path / "evil.pth"
    bad.write_bytes(pickle.dumps({"state_dict": {}, "meta": {"epoch": 1}, "x": Boom()}))
    with pytest.raises(CheckpointError) as err:
        safe_load(bad)
    assert str(bad) in str(err.value)
    assert not (tmp_path.parent / "r50_pwned_by_checkpoint").exists()


# -- bad inputs: the entry point's main() returns 2 with one line on stderr naming the file -------------
def _bad_run(capsys, tmp_path, data):
    work = tmp_path / "work"
    rc = entry("train")(["configs/resnet/resnet50_8xb16_cifar100_perf.py", "--work-dir", str(work), "--device", "cpu",
                        "--data-path", str(data), "--cfg-options", "data.workers_per_gpu=0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("ERROR: ")
    assert not work.exists()  # nothing half-written
    return err[0]


def _copy_cifar100(src, dst):
    root = dst / "cifar-100-python"
    root.mkdir(parents=True)
    for name in ("train", "test", "meta"):
        (root / name).write_bytes((src / "cifar-100-python" / name).read_bytes())
    return root


def test_missing_data_path(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(RECIPE)
    missing = tmp_path / "nowhere"
    assert str(missing) in _bad_run(capsys, tmp_path, missing)


def test_truncated_train_file(capsys, tmp_path, noise, monkeypatch):
    monkeypatch.chdir(RECIPE)
    root = _copy_cifar100(noise, tmp_path / "d")
    data = (root / "train").read_bytes()
    (root / "train").write_bytes(data[: len(data) // 3])
    line = _bad_run(capsys, tmp_path, tmp_path / "d")
    assert str(root / "train") in line and "truncated" in line


def test_wrong_image_shape(capsys, tmp_path, noise, monkeypatch):
    monkeypatch.chdir(RECIPE)
    root = _copy_cifar100(noise, tmp_path / "d")
    import numpy as np
    pickle_bytes = pickle.dumps({"data": np.zeros((4, 1024), np.uint8), "fine_labels": [0, 1, 2, 3],
                                 "coarse_labels": [0, 0, 0, 0]}, protocol=2)
    (root / "train").write_bytes(pickle_bytes)
    line = _bad_run(capsys, tmp_path, tmp_path / "d")
    assert str(root / "train") in line and "3072" in line


@pytest.mark.parametrize("script", sorted(p.relative_to(RECIPE).as_posix() for p in RECIPE.glob("test/train_*.sh"))
                         + ["tools/dist_train.sh"])
def test_script_help_prints_usage_and_exits_0(script):
    r = run(["bash", RECIPE / script, "-h"], timeout=60)
    assert r.returncode == 0 and r.stdout.strip() and "ERROR" not in r.stdout, r.stdout


@pytest.mark.parametrize("tool", ["train", "test", "export"])
def test_entry_point_help_prints_usage_and_exits_0(tool, capsys):
    with pytest.raises(SystemExit) as done:
        entry(tool)(["-h"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("usage: ")


def test_script_rejects_missing_data_path_before_python(tmp_path):
    r = run(["bash", RECIPE / "test" / "train_full_1p.sh", f"--data_path={tmp_path / 'absent'}",
             f"--output_path={tmp_path / 'o'}"], timeout=60)
    assert r.returncode != 0
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1 and str(tmp_path / "absent") in lines[0]
