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
def uninterrupted(digits, tmp_path_factory):  # also the truncated-checkpoint test's source
    out = tmp_path_factory.mktemp("whole")
    r = run(train_cmd(out, *TINY))
    assert r.returncode == 0, r.stdout[-3000:]
    return out


def _kill_point(work_dir):
    """(last checkpoint event, last step event) once the run is mid-epoch after a checkpoint: epoch_2.pth is
    complete and a step of epoch 3 is done; else None."""
    seen = events.read(work_dir)
    saved = [e for e in seen if e["event"] == "checkpoint"]
    steps = [e for e in seen if e["event"] == "step"]
    if saved and steps and saved[-1]["epoch"] == 2 and steps[-1]["epoch"] == 3:
        return saved[-1], steps[-1]
    return None


def _same_checkpoint(a, b, a_dir, b_dir):
    """Everything the two checkpoints hold is identical (bit for bit), but the save time and the work dir."""
    assert a.keys() == b.keys() == {"meta", "state_dict", "optimizer"}
    skip = {"time", "config", "hook_msgs"}
    assert {k: v for k, v in a["meta"].items() if k not in skip} == \
        {k: v for k, v in b["meta"].items() if k not in skip}
    assert a["meta"]["config"].replace(str(a_dir), "<work>") == b["meta"]["config"].replace(str(b_dir), "<work>")
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k, v in a["state_dict"].items():  # weights and BatchNorm statistics
        assert torch.equal(v, b["state_dict"][k]), k
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]  # lr, momentum, ... per group
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys() and len(sa) == len(a["optimizer"]["param_groups"][0]["params"])
    for i, st in sa.items():
        assert st.keys() == sb[i].keys() == {"momentum_buffer"}
        assert torch.equal(st["momentum_buffer"], sb[i]["momentum_buffer"]), f"momentum of parameter {i}"


def test_sigkill_mid_epoch_then_resume_auto_ends_with_the_same_weights(uninterrupted, tmp_path):
    """SIGKILL mid-epoch after a checkpoint (found from the events), --resume auto, then the last checkpoint holds
    bit-identical weights, BatchNorm statistics, momenta, optimiser settings and counters to an uninterrupted run of
    the same seed (same host, same thread count; on CPU the kernels are deterministic for a fixed thread count), and
    every step logged the same loss."""
    proc = subprocess.Popen([str(c) for c in train_cmd(tmp_path, *TINY)], cwd=RECIPE, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 2400  # > 3x the ~700 s to the kill point measured on the loaded 2-core host
        while time.time() < deadline and proc.poll() is None:
            if _kill_point(tmp_path):
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.05)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == -signal.SIGKILL, f"the run was not killed mid-training (exit {rc})"
    # where the kill landed, from the events the killed run left: after epoch 2's checkpoint, inside epoch 3
    killed_run = events.read(tmp_path)
    saved = [e for e in killed_run if e["event"] == "checkpoint"]
    reached = max(e["global_step"] for e in killed_run if e["event"] == "step")
    assert [(e["epoch"], e["global_step"]) for e in saved] == [(1, 2), (2, 4)]
    assert 4 < reached < 6, f"killed at global step {reached}, not inside epoch 3"
    assert not (tmp_path / "epoch_3.pth").exists() and (tmp_path / "epoch_2.pth").exists()

    r = run(train_cmd(tmp_path, *TINY, "--resume", "auto"))
    assert r.returncode == 0, r.stdout[-3000:]
    resumed = events.last(tmp_path, "resume")
    assert resumed["checkpoint"] == str((tmp_path / "epoch_2.pth").resolve())
    assert (resumed["epoch"], resumed["global_step"]) == (2, 4)
    assert events.read(tmp_path, "resume")[0]["checkpoint"] is None  # the killed run started fresh
    # the resumed run retrained the steps the kill lost: it restarted below the step reached, and trained on
    assert resumed["global_step"] < reached
    redone = [(e["epoch"], e["step"], e["global_step"]) for e in events.read(tmp_path, "step")
              if e["pid"] == resumed["pid"]]
    assert redone == [(3, 1, 5), (3, 2, 6)]

    a = torch.load(uninterrupted / "epoch_3.pth", map_location="cpu", weights_only=True)
    b = torch.load(tmp_path / "epoch_3.pth", map_location="cpu", weights_only=True)
    assert a["meta"]["iter"] == b["meta"]["iter"] == 6
    _same_checkpoint(a, b, uninterrupted, tmp_path)

    # --seed determinism: the killed run and the uninterrupted one logged the same loss at every step
    la, lb = _losses(uninterrupted), _losses(tmp_path)
    assert len(la) == 6 and la == lb
    exact = {(e["epoch"], e["step"]): e["loss"] for e in events.read(uninterrupted, "step")}
    assert exact == {(e["epoch"], e["step"]): e["loss"] for e in events.read(tmp_path, "step")}  # unrounded too


def test_auto_resume_skips_a_truncated_checkpoint_and_says_so(uninterrupted, tmp_path):
    from mmcls_ext.checkpoint import find_resume
    for n in (1, 2):
        (tmp_path / f"epoch_{n}.pth").write_bytes((uninterrupted / f"epoch_{n}.pth").read_bytes())
    data = (uninterrupted / "epoch_3.pth").read_bytes()
    (tmp_path / "epoch_3.pth").write_bytes(data[: len(data) // 2])
    messages = []
    assert find_resume(tmp_path, log=messages.append) == tmp_path / "epoch_2.pth"
    assert len(messages) == 1 and "epoch_3.pth" in messages[0] and "skipping" in messages[0]


class _RunsCode:
    """Unpickling this runs ``source`` (pickle calls ``exec(source)`` to rebuild it)."""

    def __init__(self, source):
        self.source = source

    def __reduce__(self):
        return (exec, (self.source,))


def test_checkpoint_that_would_run_code_is_refused(tmp_path, capsys, monkeypatch, digits):
    from mmcls_ext.checkpoint import find_resume, safe_load
    monkeypatch.chdir(RECIPE)
    marker = tmp_path / "code_ran.txt"
    evil = tmp_path / "evil.pth"
    # a real torch checkpoint (zip), mmcv's layout, with one entry that runs Python when unpickled; meta says
    # the run is complete, so an entry point that wrongly accepted it would not train
    torch.save({"meta": {"epoch": 1, "iter": 1}, "state_dict": {},
                "x": _RunsCode(f"open({str(marker)!r}, 'w').write('ran')")}, evil)

    # the payload is live: a plain loader runs it
    torch.load(evil, map_location="cpu", weights_only=False)
    assert marker.read_text() == "ran"
    marker.unlink()

    # the recipe's loader refuses it with one line naming the file, and nothing ran
    with pytest.raises(CheckpointError) as err:
        safe_load(evil)
    assert str(evil) in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()

    # and so does every entry point that reads a checkpoint: exit 2, one ERROR line naming the file and the
    # refused code (exec), nothing ran, nothing written
    # their import-time warnings on stderr are not the entry points' output
    import mmcls.apis, mmcls.models, mmcv.runner  # noqa: E401,F401
    capsys.readouterr()
    work = tmp_path / "work"
    tiny = ["--cfg-options", "data.samples_per_gpu=4", "data.workers_per_gpu=0", "runner.max_epochs=1"]
    for tool, argv in (
            ("train", ["configs/resnet/resnet50_8xb16_cifar100_perf.py", "--work-dir", str(work), "--device", "cpu",
                       "--data-path", str(digits), "--no-validate", "--train-steps", "1", "--resume", str(evil),
                       *tiny]),
            ("test", ["configs/resnet/resnet50_8xb16_cifar100_perf.py", str(evil), "--data-path", str(digits),
                      "--device", "cpu", "--cfg-options", "data.test.max_samples=4"]),
            ("export", ["configs/resnet/resnet50_8xb16_cifar100_perf.py", str(evil),
                        "--output-file", str(tmp_path / "evil.onnx")])):
        rc = entry(tool)(argv)
        lines = capsys.readouterr().err.strip().splitlines()
        assert rc == 2, tool
        assert len(lines) == 1 and lines[0].startswith("ERROR: ") and str(evil) in lines[0], (tool, lines)
        assert "exec" in lines[0], lines[0]
        assert not marker.exists(), f"tools/{tool}.py ran the checkpoint's code"
    assert not work.exists() and not (tmp_path / "evil.onnx").exists()

    # --resume auto reads every epoch_N.pth it considers through the same loader: skipped, named, not run
    auto = tmp_path / "auto"
    auto.mkdir()
    (auto / "epoch_1.pth").write_bytes(evil.read_bytes())
    messages = []
    assert find_resume(auto, log=messages.append) is None
    assert len(messages) == 1 and str(auto / "epoch_1.pth") in messages[0]
    assert not marker.exists()


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
                         + ["tools/dist_train.sh", "tools/dist_test.sh"])
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
