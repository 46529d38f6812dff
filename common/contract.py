"""The output contract of a training run, checked the same way for every recipe.

What users' tooling reads after ``bash test/train_performance_1p.sh``: the "Final result" banner on stdout
(DESIGN.md section 6), ``${CaseName}.log`` and the loss file as the recipe's original writes them (its
:class:`common.runrecord.CaseLogSpec`), and the JSON record our own tools read. :func:`check_run` asserts
all of it from the files and the printed text, and every recipe's test suite calls it on the run of its
performance script (one function, the same assertions for all five; no extra training). :func:`check_refused`
is the same for a bad flag: one ``ERROR``/usage line naming it, exit status 2, nothing written.
"""
from __future__ import annotations

import json
import math
import platform
from pathlib import Path

from .banner import HEADER, parse_banner
from .runrecord import JSON_REQUIRED, CaseLogSpec


def read_case_log(path) -> list:
    """The ``key = value`` lines of a ``${CaseName}.log`` as (key, value) pairs, in file order."""
    pairs = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        key, sep, value = line.partition(" = ")
        assert sep, f"{path}:{n}: not a 'key = value' line: {line!r}"
        pairs.append((key, value))
    return pairs


def check_run(output_dir, stdout: str, spec: CaseLogSpec, *, network: str, case: str, rank_size: int,
              batch_size: int) -> dict:
    """Assert that the run in ``output_dir`` (its printed ``stdout``) kept the contract of ``spec``.

    ``batch_size`` is the per-device batch. Returns ``{"banner", "case_log", "losses", "record"}``.
    """
    out = Path(output_dir)
    banner = parse_banner(stdout)
    lines = stdout.splitlines()
    at = max(i for i, line in enumerate(lines) if line.strip() == HEADER)
    duration = [i for i, line in enumerate(lines) if line.startswith("Final Training Duration sec : ")]
    if spec.duration_line:  # CutMix: the line right before the banner, the run's whole seconds
        assert duration and duration[-1] == at - 1, "'Final Training Duration sec' is not the line before the banner"
        assert int(lines[at - 1].rsplit(" : ", 1)[1]) == int(banner["e2e_seconds"])
    else:
        assert not duration, "a 'Final Training Duration sec' line the original does not print"

    log_path = out / f"{case}.log"
    assert log_path.is_file(), f"{log_path}: missing"
    pairs = read_case_log(log_path)
    assert [k for k, _ in pairs] == list(spec.keys), f"{log_path}: keys {[k for k, _ in pairs]}, want {spec.keys}"
    kv = dict(pairs)
    global_batch = batch_size * rank_size
    ips = float(kv["ActualFPS"])
    assert kv["Network"] == network and kv["CaseName"] == case and int(kv["RankSize"]) == rank_size, kv
    assert int(kv["BatchSize"]) == (global_batch if spec.batch_size == "global" else batch_size), kv
    assert kv["DeviceType"] == platform.machine(), kv  # `uname -m`, as every original
    assert kv["ActualFPS"] == f"{banner['images_per_sec']:.2f}" and ips > 0, (kv, banner)
    if spec.training_time == "sec_per_step":
        assert kv["TrainingTime"] == f"{banner['sec_per_step']:.4f}", (kv, banner)
    else:  # ms per step from the global batch and the FPS, %.2f
        assert "." in kv["TrainingTime"] and len(kv["TrainingTime"].split(".")[1]) == 2, kv
        assert math.isclose(float(kv["TrainingTime"]), global_batch * 1000.0 / ips, rel_tol=0.01, abs_tol=0.01), kv
    assert int(kv["E2ETrainingTime"]) == int(banner["e2e_seconds"]), (kv, banner)
    accuracy = float(kv["TrainAccuracy"])
    assert accuracy == round(banner["accuracy"], 4) or (math.isnan(accuracy) and math.isnan(banner["accuracy"]))

    loss_path = out / spec.loss_file.format(case=case)
    assert loss_path.is_file(), f"{loss_path}: missing"
    losses = loss_path.read_text().splitlines()
    assert losses, f"{loss_path}: empty"
    assert all(math.isfinite(float(x)) for x in losses), f"{loss_path}: a line that is not a finite number"
    assert kv["ActualLoss"] == losses[-1], f"ActualLoss {kv['ActualLoss']!r} is not the loss file's last line"

    json_path = out / f"{case}.json"
    record = json.loads(json_path.read_text())
    missing = [k for k in JSON_REQUIRED if k not in record]
    assert not missing, f"{json_path}: missing {missing}"
    assert record["case_name"] == case and record["network"] == network and record["rank_size"] == rank_size
    assert record["batch_size"] == batch_size and record["loss_lines"] == len(losses)
    assert f"{record['images_per_sec']:.2f}" == kv["ActualFPS"]
    assert record["cpu_tuning"] is not None
    return {"banner": banner, "case_log": kv, "losses": [float(x) for x in losses], "record": record}


def check_refused(returncode: int, output: str, flag: str, output_dir=None) -> str:
    """A bad flag: exit status 2, a line naming ``flag`` that says it is an error, no run record written."""
    assert returncode == 2, f"exit status {returncode} for {flag}, want 2:\n{output[-2000:]}"
    named = [line for line in output.splitlines() if flag in line and ("error" in line.lower())]
    assert named, f"no error line names {flag}:\n{output[-2000:]}"
    if output_dir is not None and Path(output_dir).exists():
        assert not list(Path(output_dir).glob("*.json")), f"{output_dir}: a run record after a refused flag"
    return named[-1]
