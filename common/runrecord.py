"""Run records: the Ascend key-value ``${CaseName}.log``, its loss file, and the JSON ``${CaseName}.json``.

The key-value log and the loss file are written exactly as each recipe's original test scripts write them
(reference/originals.md): their keys, key order, units and formats differ between the originals, so every
recipe declares a :class:`CaseLogSpec` and :func:`finish_run` renders it (one writer, five specs). The JSON
record is the project's own, the same for all. All are written atomically, by rank 0 only (callers check
``is_primary``).
"""
from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from .banner import print_banner
from . import cputune, events
from .checkpoint import atomic_write_text
from .throughput import ThroughputMeter

# the two key orders of the originals' ${CaseName}.log: CSPNet's (ModelZoo-TensorFlow ID0840) and the one of
# CutMix (ID2502) and ResNet-50 (ModelZoo-PyTorch), which moves TrainAccuracy before ActualLoss
KEYS_LOSS_FIRST = ("Network", "RankSize", "BatchSize", "DeviceType", "CaseName", "ActualFPS", "TrainingTime",
                   "ActualLoss", "E2ETrainingTime", "TrainAccuracy")
KEYS_ACCURACY_FIRST = ("Network", "RankSize", "BatchSize", "DeviceType", "CaseName", "ActualFPS", "TrainingTime",
                       "TrainAccuracy", "ActualLoss", "E2ETrainingTime")
CASE_LOG_KEYS = list(KEYS_LOSS_FIRST)


@dataclass(frozen=True)
class CaseLogSpec:
    """How one recipe's original writes ``${CaseName}.log`` and its loss file.

    ``batch_size``: what the ``BatchSize`` key holds, ``"global"`` (per-device batch x RankSize) or
    ``"per_device"``. ``training_time``: ``"sec_per_step"`` (CSPNet: the StepTime line, seconds) or
    ``"ms_per_step"`` (CutMix, ResNet-50: global batch x 1000 / FPS, ``%.2f``). ``loss_file``: its name, with
    ``{case}`` for the case name; one training loss per line, ``ActualLoss`` is its last line.
    ``duration_line``: print ``Final Training Duration sec : N`` just before the banner (CutMix).
    """
    keys: Tuple[str, ...]
    batch_size: str
    training_time: str
    loss_file: str
    duration_line: bool = False

    def __post_init__(self):
        if sorted(self.keys) != sorted(KEYS_LOSS_FIRST):
            raise ValueError(f"case log keys must be an order of {KEYS_LOSS_FIRST}, got {self.keys}")
        if self.batch_size not in ("global", "per_device") or \
                self.training_time not in ("sec_per_step", "ms_per_step") or "{case}" not in self.loss_file:
            raise ValueError(f"bad case log spec {self}")

    def fields(self, *, network, case, rank_size, batch_size, ips, sps, e2e, accuracy, actual_loss) -> dict:
        """The ``key: value`` pairs of the log, in the spec's order. ``batch_size`` is per device."""
        global_batch = batch_size * rank_size
        ms = global_batch * 1000.0 / ips if ips > 0 else float("nan")
        values = {
            "Network": network, "RankSize": rank_size, "CaseName": case,
            "BatchSize": global_batch if self.batch_size == "global" else batch_size,
            "DeviceType": platform.machine(),  # `uname -m` in every original, whatever the accelerator
            "ActualFPS": f"{ips:.2f}",
            "TrainingTime": f"{sps:.4f}" if self.training_time == "sec_per_step" else f"{ms:.2f}",
            "ActualLoss": actual_loss, "E2ETrainingTime": int(round(e2e)), "TrainAccuracy": f"{accuracy:.4f}"}
        return {k: values[k] for k in self.keys}


def format_loss(loss: float) -> str:
    return f"{float(loss):.6f}"


def run_losses(output_dir, rank: int = 0, pid: Optional[int] = None) -> list:
    """The training losses this process logged (its ``step`` events in ``output_dir``), in order: the lines
    of the loss file, as the originals took every loss line of the run's own log."""
    pid = os.getpid() if pid is None else pid
    return [e["loss"] for e in events.read(output_dir, "step") if e.get("pid") == pid and e.get("rank") == rank
            and e.get("loss") is not None]

JSON_REQUIRED = ["network", "case_name", "framework", "framework_version", "device", "rank_size", "batch_size",
                 "params", "epochs", "steps", "warmup_seconds", "images_per_sec", "sec_per_step", "e2e_seconds",
                 "accuracy", "loss", "seed", "command"]


def case_name(network: str, batch_size: int, rank_size: int, perf: bool, suffix: str = "") -> str:
    """``${Network}_bs${BatchSize}_${RankSize}p_{perf|acc}`` as the Ascend scripts name a case."""
    return f"{network}_bs{batch_size}_{rank_size}p{suffix}_{'perf' if perf else 'acc'}"


def start_time() -> float:
    """Wall-clock start of the job: the launching shell script's, when it exported one."""
    try:
        return float(os.environ["MODELZOO_START_TIME"])
    except (KeyError, ValueError):
        return _PROCESS_START


_PROCESS_START = time.time()


def write_case_log(path, fields: dict) -> Path:
    """``key = value`` lines in the order of ``fields`` (a spec's :meth:`CaseLogSpec.fields`)."""
    missing = [k for k in KEYS_LOSS_FIRST if k not in fields]
    if missing:
        raise ValueError(f"case log is missing {missing}")
    return atomic_write_text(path, "".join(f"{k} = {v}\n" for k, v in fields.items()))


def write_json(path, record: dict) -> Path:
    missing = [k for k in JSON_REQUIRED if k not in record]
    if missing:
        raise ValueError(f"run record is missing {missing}")
    return atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True, default=_jsonable) + "\n")


def _jsonable(o):
    try:
        return o.item()  # numpy scalars
    except AttributeError:
        return str(o)


def finish_run(*, output_dir, network: str, case: str, framework: str, framework_version: str, device: str,
               rank_size: int, batch_size: int, params: int, epochs: int, meter: ThroughputMeter,
               accuracy: float, loss: Optional[float], seed, spec: CaseLogSpec,
               losses: Optional[Sequence[float]] = None, extra: Optional[dict] = None,
               e2e_seconds: Optional[float] = None, stream=None, global_step: Optional[int] = None) -> dict:
    """Print the banner and write ``<case>.log`` (as ``spec`` says), its loss file and ``<case>.json`` into
    ``output_dir``. Returns the record.

    ``batch_size`` is the per-device batch; images/sec is summed over all ``rank_size`` ranks by the meter.
    ``losses``: the loss file's lines (default: :func:`run_losses`, this process's logged step losses; the
    final ``loss`` alone when it logged none). ``global_step``: the run's last global step for the
    ``finished`` event (default: the steps this process timed, which after a resume is fewer).
    """
    e2e = time.time() - start_time() if e2e_seconds is None else e2e_seconds
    ips, sps = meter.images_per_sec, meter.sec_per_step
    acc = float(accuracy) if accuracy is not None else float("nan")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if losses is None:
        losses = run_losses(out) or ([] if loss is None else [loss])
    lines = [format_loss(x) for x in losses]
    loss_file = out / spec.loss_file.format(case=case)
    atomic_write_text(loss_file, "".join(f"{x}\n" for x in lines))
    if spec.duration_line:
        print(f"Final Training Duration sec : {int(round(e2e))}", file=stream or sys.stdout, flush=True)
    print_banner(ips, sps, e2e, acc, stream=stream)
    write_case_log(out / f"{case}.log", spec.fields(
        network=network, case=case, rank_size=rank_size, batch_size=batch_size, ips=ips, sps=sps, e2e=e2e,
        accuracy=acc, actual_loss=lines[-1] if lines else ""))
    record = {
        "network": network, "case_name": case, "framework": framework, "framework_version": framework_version,
        "device": device, "rank_size": rank_size, "batch_size": batch_size, "global_batch_size": batch_size * rank_size,
        "params": int(params), "epochs": epochs, "steps": meter.total_steps, "steady_steps": meter.steady_steps,
        "warmup_steps": meter.warmup_steps_done, "warmup_seconds": round(meter.warmup_seconds, 4),
        # unrounded: rounding here then again to the banner's %.2f / %.4f could disagree with the banner in
        # the last printed digit (111.80495 -> 111.805 -> "111.81" against the banner's "111.80")
        "images_per_sec": float(ips), "sec_per_step": float(sps), "e2e_seconds": round(e2e, 3),
        "accuracy": acc, "loss": None if loss is None else float(loss), "seed": seed,
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "python": platform.python_version(), "machine": platform.machine(), "host": platform.node(),
        "cpu_count": os.cpu_count(), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "window_images_per_sec": [round(r, 3) for r in meter.window_rates()],
        "median_window_images_per_sec": round(meter.as_dict()["median_window_images_per_sec"], 3),
        # the CPU and every host-dependent choice of this run (probed, cached, the user's, or a rule)
        "cpu_tuning": cputune.as_record(),
        "case_log": str(out / f"{case}.log"), "loss_file": str(loss_file), "loss_lines": len(lines),
    }
    if extra:
        record.update(extra)
    write_json(out / f"{case}.json", record)
    events.emit(out, "cpu_tuning", **record["cpu_tuning"])
    events.emit(out, "finished", global_step=meter.total_steps if global_step is None else int(global_step), images_per_sec=record["images_per_sec"],
                accuracy=acc, case=case)
    return record
