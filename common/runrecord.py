"""Run records: the Ascend key-value ``${CaseName}.log`` and the JSON ``${CaseName}.json`` beside it.

Both are written atomically. Only rank 0 writes them (callers check ``is_primary``).
"""
from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Optional

from .banner import print_banner
from . import cputune, events
from .checkpoint import atomic_write_text
from .throughput import ThroughputMeter

CASE_LOG_KEYS = ["Network", "RankSize", "BatchSize", "DeviceType", "CaseName", "ActualFPS", "TrainingTime",
                 "ActualLoss", "E2ETrainingTime", "TrainAccuracy"]

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
    missing = [k for k in CASE_LOG_KEYS if k not in fields]
    if missing:
        raise ValueError(f"case log is missing {missing}")
    text = "".join(f"{k} = {fields[k]}\n" for k in CASE_LOG_KEYS)
    return atomic_write_text(path, text)


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
               accuracy: float, loss: Optional[float], seed, extra: Optional[dict] = None,
               e2e_seconds: Optional[float] = None, stream=None, global_step: Optional[int] = None) -> dict:
    """Print the banner and write ``<case>.log`` + ``<case>.json`` into ``output_dir``. Returns the record.

    ``batch_size`` is the per-device batch; images/sec is summed over all ``rank_size`` ranks by the meter.
    ``global_step``: the run's last global step for the ``finished`` event (default: the steps this process
    timed, which after a resume is fewer).
    """
    e2e = time.time() - start_time() if e2e_seconds is None else e2e_seconds
    ips, sps = meter.images_per_sec, meter.sec_per_step
    acc = float(accuracy) if accuracy is not None else float("nan")
    print_banner(ips, sps, e2e, acc, stream=stream)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_case_log(out / f"{case}.log", {
        "Network": network, "RankSize": rank_size, "BatchSize": batch_size * rank_size,
        "DeviceType": platform.machine() if device == "cpu" else device, "CaseName": case,
        "ActualFPS": f"{ips:.2f}", "TrainingTime": f"{sps:.4f}",
        "ActualLoss": "" if loss is None else f"{float(loss):.6f}",
        "E2ETrainingTime": int(round(e2e)), "TrainAccuracy": f"{acc:.4f}"})
    record = {
        "network": network, "case_name": case, "framework": framework, "framework_version": framework_version,
        "device": device, "rank_size": rank_size, "batch_size": batch_size, "global_batch_size": batch_size * rank_size,
        "params": int(params), "epochs": epochs, "steps": meter.total_steps, "steady_steps": meter.steady_steps,
        "warmup_steps": meter.warmup_steps_done, "warmup_seconds": round(meter.warmup_seconds, 4),
        "images_per_sec": round(ips, 4), "sec_per_step": round(sps, 6), "e2e_seconds": round(e2e, 3),
        "accuracy": acc, "loss": None if loss is None else float(loss), "seed": seed,
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "python": platform.python_version(), "machine": platform.machine(), "host": platform.node(),
        "cpu_count": os.cpu_count(), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "window_images_per_sec": [round(r, 3) for r in meter.window_rates()],
        "median_window_images_per_sec": round(meter.as_dict()["median_window_images_per_sec"], 3),
        # the CPU and every host-dependent choice of this run (probed, cached, the user's, or a rule)
        "cpu_tuning": cputune.as_record(),
    }
    if extra:
        record.update(extra)
    write_json(out / f"{case}.json", record)
    events.emit(out, "cpu_tuning", **record["cpu_tuning"])
    events.emit(out, "finished", global_step=meter.total_steps if global_step is None else int(global_step), images_per_sec=record["images_per_sec"],
                accuracy=acc, case=case)
    return record
