#!/usr/bin/env python3
"""The table of ci/gpu_check.sh: images/sec of its perf runs against the original's per-device figures.

Reads what the check left in ``--runs`` (each run's ``*_perf.json`` record and ``<name>.rc``, the resume
and test exit statuses), prints one table and writes it with the raw numbers to ``--out`` (JSON).
Exits 1 when any step failed, so the check's exit status says whether everything ran.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path


FORMATS = {"contiguous": "NCHW", "channels_last": "channels-last"}


def _rc(path: Path):
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None  # the step never ran to the point of writing it


def _record(run_dir: Path):
    found = sorted(run_dir.glob("*_perf.json"))
    return json.loads(found[0].read_text()) if found else None


def _precision(amp: bool, device: str) -> str:
    if not amp:
        return "fp32"
    return "bf16 AMP" if device == "cpu" else "fp16 AMP"


def _pytest_summary(out: Path) -> str:
    try:
        lines = out.read_text(errors="replace").splitlines()
    except OSError:
        return "no output"
    for line in reversed(lines):
        if re.search(r"\b(passed|failed|error|errors|no tests ran)\b", line):
            return line.strip("= ").strip()
    return lines[-1].strip() if lines else "no output"


def _device_line() -> dict:
    import torch
    info = {"torch": torch.__version__, "cuda": torch.version.cuda}
    info["device_name"] = (torch.cuda.get_device_name(0) if torch.cuda.is_available()
                           else f"CPU ({os.cpu_count()} cores)")
    return info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=["gpu", "dry"], required=True)
    ap.add_argument("--runs", type=Path, required=True, help="folder holding the check's runs")
    ap.add_argument("--out", type=Path, required=True, help="JSON file to write")
    ap.add_argument("--row", action="append", default=[],
                    metavar="NAME:BATCH:FORMAT:ORIGINAL_BATCH:ORIGINAL_IMG_PER_SEC",
                    help="one speed run: its folder under --runs, the batch and memory format it ran with "
                         "(contiguous|channels_last), the original's batch and figure")
    ap.add_argument("--amp", default="", help="the AMP flag the runs were given (recorded)")
    ap.add_argument("--tests", default="", help="the pytest arguments of the tests that ran")
    ap.add_argument("--wall", type=float, default=None, help="seconds the check took so far")
    args = ap.parse_args(argv)

    rows, ok = [], True
    for spec in args.row:
        try:
            name, batch, fmt, orig_batch, orig = spec.split(":")
            batch, orig_batch, orig = int(batch), int(orig_batch), float(orig)
            if fmt not in FORMATS:
                raise ValueError
        except ValueError:
            ap.error(f"--row {spec!r}: expected NAME:BATCH:contiguous|channels_last:ORIGINAL_BATCH:ORIGINAL_IMG_PER_SEC")
        rc, rec = _rc(args.runs / f"{name}.rc"), _record(args.runs / name)
        good = rc == 0 and rec is not None
        ok &= good
        ips = rec["images_per_sec"] if good else None
        # a ratio only where the run is the original's configuration on a GPU, not the CPU rehearsal
        comparable = good and args.mode == "gpu" and batch == orig_batch
        # what the run recorded when it got that far, else what it was asked for
        amp = rec["amp"] if rec else args.amp == "--amp"
        device = rec["device"] if rec else ("cuda" if args.mode == "gpu" else "cpu")
        fmt = rec.get("memory_format", fmt) if rec else fmt
        rows.append({
            "name": name, "batch": batch, "original_batch": orig_batch,
            "precision": _precision(amp, device), "memory_format": FORMATS.get(fmt, fmt), "images_per_sec": ips,
            "median_window_images_per_sec": rec.get("median_window_images_per_sec") if rec else None,
            "sec_per_step": rec.get("sec_per_step") if rec else None,
            "steady_steps": rec.get("steady_steps") if rec else None,
            "warmup_steps": rec.get("warmup_steps") if rec else None,
            "original_images_per_sec": orig, "original_device": "Ascend 910, apex O2, torch 1.8",
            "ratio": round(ips / orig, 3) if comparable else None, "rc": rc, "record": rec})

    resume_rc = _rc(args.runs / "resume.rc")
    tests_rc = _rc(args.runs / "tests.rc")
    ok &= resume_rc == 0 and tests_rc == 0
    env = _device_line()
    first = next((r["record"] for r in rows if r["record"]), None)
    result = {
        "check": "ci/gpu_check.sh", "mode": "gpu" if args.mode == "gpu" else "cpu dry run", **env,
        "framework_version": first.get("framework_version") if first else None,
        "amp_flag": args.amp,
        "rows": rows,
        "resume": {"rc": resume_rc, "what": "1 epoch, then --resume=auto to epoch 2 through test/train_performance_1p.sh"},
        "tests": {"rc": tests_rc, "pytest_args": args.tests, "summary": _pytest_summary(args.runs / "tests.out")},
        "wall_seconds": args.wall, "ok": bool(ok), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }

    title = (f"ResNet-50 CIFAR (resnet50_cifar_pt) on {env['device_name']}, torch {env['torch']}"
             + (f" (CUDA {env['cuda']})" if env["cuda"] else ""))
    if args.mode == "dry":
        title += " -- CPU DRY RUN: tiny step counts, figures say nothing about a GPU"
    lines = [title, "",
             "| batch | precision, memory format | images/sec measured | original per device (Ascend 910) | ratio |",
             "|---|---|---|---|---|"]
    for r in rows:
        batch = str(r["batch"]) if r["batch"] == r["original_batch"] else f"{r['batch']} (for {r['original_batch']})"
        measured = f"{r['images_per_sec']:,.1f}" if r["images_per_sec"] is not None else f"failed (rc {r['rc']})"
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
        lines.append(f"| {batch} | {r['precision']}, {r['memory_format']} | {measured} | {r['original_images_per_sec']:,.0f} "
                     f"(batch {r['original_batch']}) | {ratio} |")
    result["table"] = "\n".join(lines)
    lines.append("")
    if not any(r["memory_format"] == FORMATS["channels_last"] for r in rows):
        lines.append("channels-last: not run, tools/train.py has no --memory-format flag")
    resume = "ok" if resume_rc == 0 else f"FAILED (rc {resume_rc})"
    lines += [f"resume on {'cuda' if args.mode == 'gpu' else 'cpu'}: {resume}",
              f"recipe tests: {result['tests']['summary']}" + ("" if tests_rc == 0 else
                                                               " (timed out)" if tests_rc == 124 else f" (rc {tests_rc})"),
              f"wall: {args.wall:.0f} s" if args.wall is not None else "",
              f"written: {args.out}",
              "gpu_check: " + ("all steps passed" if ok else "SOME STEPS FAILED")]
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str) + "\n")
    tmp.replace(args.out)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
