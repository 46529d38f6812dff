#!/usr/bin/env python3
"""1 rank against 2 ranks: each recipe's performance run on the digits data, images/sec from its run record.

    python ci/dist_speed.py [recipe ...] [--quick]

For every recipe, the 1-device performance script (``test/train_performance_1p.sh``) and the multi-device
one (``test/train_performance_8p.sh``, or the MindSpore recipes' ``scripts/run_distribut*``) from a generated
2-device rank table, both on CPU, the same per-device batch and a fixed number of steps. images/sec is the
run record's steady-state figure (``<case>.json``: warm-up and graph compilation excluded; summed over
ranks). Prints a markdown table and writes ``bench_output/dist_speed.json``; run logs go to
``bench_output/dist_speed/``. On one CPU host both ranks share the same cores, so the figure says what the
2-rank path costs there, not what two devices would gain. ``--quick`` runs fewer steps (a smoke run).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from common.testing import free_port, write_rank_table  # noqa: E402

OUT = ROOT / "bench_output"
DIGITS = ROOT / "data" / "digits"

# recipe -> its multi-device script, per-device batch, epochs, and the flags both runs share. Steps per epoch
# come from --quick. Epochs: with 2, the whole first epoch is warm-up (common.throughput.warmup_steps); 1 where
# a step is too slow for that.
# Small shapes (32-64 px digits, 10 classes) keep a full run of every recipe within about 10 minutes on 2 cores.
RECIPES = {
    "cspnet_tf1": {"multi": "test/train_performance_8p.sh", "batch": 16, "epochs": 2, "flags": []},
    "cutmix_tf2": {"multi": "test/train_performance_8p.sh", "batch": 32, "epochs": 2, "flags": []},
    "resnet50_cifar_pt": {"multi": "test/train_performance_8p.sh", "batch": 16, "epochs": 1,
                          "flags": ["--cfg-options=data.workers_per_gpu=0", "--cfg-options=data.val.max_samples=64"]},
    "sppnet_ms": {"multi": "scripts/run_distribution_ascend.sh", "batch": 16, "epochs": 1,
                  "flags": ["--image_size=64", "--run_eval=false", "--vet_images=false"]},
    "tinydarknet_ms": {"multi": "scripts/run_distribute_train.sh", "batch": 16, "epochs": 2,
                       "flags": ["--num_classes=10", "--image_size=64", "--check_images=False"]},
}
SPPNET_MODEL = "sppnet_single"  # the 1p script's default model


def command(recipe: str, ranks: int, out: Path, steps: int, table: Path):
    """(argv, working directory, extra environment) of one run."""
    spec = RECIPES[recipe]
    rdir = ROOT / recipe
    port = free_port(consecutive=ranks)
    script = rdir / (spec["multi"] if ranks > 1 else "test/train_performance_1p.sh")
    if recipe in ("sppnet_ms", "tinydarknet_ms") and ranks > 1:
        # the MindSpore recipes' distribution scripts take the original's positional arguments
        shared = [f"--batch_size={spec['batch']}", f"--epoch_size={spec['epochs']}", *spec["flags"]]
        if recipe == "sppnet_ms":  # writes into ./<model>_train_parallel of its working directory
            return (["bash", str(script), str(table), str(DIGITS), str(DIGITS), SPPNET_MODEL, "--device=cpu",
                     f"--master_port={port}", f"--train_steps={steps}", "--perf", *shared], out, {})
        return (["bash", str(script), str(table), "imagenet", str(DIGITS / "imagenet"), f"--output_path={out}",
                 "--device_target=CPU", f"--train_steps={steps}", "--perf", *shared], ROOT, {"MASTER_PORT": str(port)})
    argv = ["bash", str(script), f"--data_path={DIGITS}", f"--output_path={out}", "--device=cpu",
            f"--batch_size={spec['batch']}", f"--train_epochs={spec['epochs']}", f"--train_steps={steps}",
            *spec["flags"]]
    extra_env = {}
    if ranks > 1:
        argv.append(f"--rank_table={table}")
        if recipe == "resnet50_cifar_pt":
            extra_env["PORT"] = str(port)  # torchrun's master port (torchrun also sets OMP_NUM_THREADS=1 per rank)
        else:
            argv.append(f"--port={port}")
    if recipe == "sppnet_ms":
        argv.append(f"--train_model={SPPNET_MODEL}")
    return argv, ROOT, extra_env


def read_record(out: Path, ranks: int) -> dict:
    """The run record (``<case>.json`` with this rank count) written somewhere under ``out``."""
    found = []
    for path in sorted(out.rglob("*.json")):
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(rec, dict) and "images_per_sec" in rec and rec.get("rank_size") == ranks:
            found.append(rec)
    if len(found) != 1:
        raise ValueError(f"{out}: expected one run record for {ranks} rank(s), found {len(found)}")
    return found[0]


def prune(out: Path) -> None:
    """Keep a successful run's logs and records, drop its checkpoints and models (about 2 GB for all recipes)."""
    for path in sorted(out.rglob("*"), reverse=True):
        if path.is_file() and path.suffix not in (".log", ".json", ".csv"):
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def shown(argv, cwd=ROOT) -> str:
    """A command as typed in ``cwd``, with the repository's paths relative to it (no path of this machine)."""
    up = "" if Path(cwd) == ROOT else os.path.relpath(ROOT, cwd) + os.sep
    return " ".join(shlex.quote(str(a).replace(str(ROOT) + os.sep, up)) for a in argv)


def run_one(recipe: str, ranks: int, steps: int, table: Path, timeout: int) -> dict:
    out = OUT / "dist_speed" / recipe / f"{ranks}rank"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    argv, cwd, extra_env = command(recipe, ranks, out, steps, table)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "MPLBACKEND": "Agg", "GLOG_v": os.environ.get("GLOG_v", "3"), **extra_env}
    env.pop("MZ_PYTHON", None)  # each script finds its own framework's environment (common/sh/env.sh)
    typed = " ".join(f"{k}={v}" for k, v in extra_env.items()) + (" " if extra_env else "") + shown(argv, cwd)
    res = {"command": typed if cwd == ROOT else f"cd {shown([cwd])} && {typed}", "ranks": ranks}
    t0 = time.time()
    # its own process group, so that a run past its time is stopped with every rank and launcher it started
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        log, rc = proc.communicate(timeout=timeout)[0], proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, rc = proc.communicate()[0], None
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    res["wall_seconds"] = round(time.time() - t0, 1)
    (out / "run.log").write_text(log)
    if rc != 0:
        tail = " | ".join(log.strip().splitlines()[-3:])
        res["error"] = f"timed out after {timeout} s" if rc is None else f"exit {rc}: {tail}"
        return res
    try:
        rec = read_record(out, ranks)
    except ValueError as exc:
        res["error"] = str(exc)
        return res
    prune(out)
    res.update(images_per_sec=rec["images_per_sec"], batch_size=rec["batch_size"],
               global_batch_size=rec.get("global_batch_size"), steps=rec.get("steps"),
               warmup_seconds=rec.get("warmup_seconds"), case_name=rec.get("case_name"))
    return res


def scaling(one: dict, two: dict):
    """2-rank images/sec (summed) over 1-rank images/sec; None when either run has no figure."""
    a, b = one.get("images_per_sec"), two.get("images_per_sec")
    if not a or b is None:
        return None
    return b / a


def markdown(rows: dict) -> str:
    lines = ["| recipe | per-device batch | 1-rank img/s | 2-rank img/s (summed) | scaling (2-rank / 1-rank) |",
             "|---|---|---|---|---|"]
    for recipe, r in rows.items():
        if "skipped" in r:
            lines.append(f"| {recipe} | - | - | - | skipped: {r['skipped']} |")
            continue
        one, two = r["1rank"], r["2rank"]
        fig = lambda x: f"{x['images_per_sec']:.2f}" if x.get("images_per_sec") is not None else "error"  # noqa: E731
        s = scaling(one, two)
        lines.append(f"| {recipe} | {r['batch']} | {fig(one)} | {fig(two)} | {'-' if s is None else f'{s:.2f}'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("recipes", nargs="*", default=list(RECIPES), help=f"default: all of {', '.join(RECIPES)}")
    ap.add_argument("--quick", action="store_true", help="4 steps per epoch instead of 10 (a smoke run)")
    ap.add_argument("--timeout", type=int, default=900, help="seconds allowed for one run")
    args = ap.parse_args(argv)
    unknown = [r for r in args.recipes if r not in RECIPES]
    if unknown:
        ap.error(f"unknown recipe(s) {', '.join(unknown)}; known: {', '.join(RECIPES)}")
    if not (DIGITS / "imagenet" / "train").is_dir() or not (DIGITS / "cifar-100-python" / "train").is_file():
        print(f"ERROR: {DIGITS}: the digits data is missing: run `make data`", file=sys.stderr)
        return 2
    steps = 4 if args.quick else 10
    table = write_rank_table(OUT / "dist_speed" / "rank_table_2dev.json", 2)
    rows, t0 = {}, time.time()
    for recipe in args.recipes:
        multi = ROOT / recipe / RECIPES[recipe]["multi"]
        if not multi.exists():
            rows[recipe] = {"skipped": f"{multi.relative_to(ROOT)} not found"}
            print(f"dist_speed: skipping {recipe}: {rows[recipe]['skipped']}", flush=True)
            continue
        rows[recipe] = {"batch": RECIPES[recipe]["batch"], "steps_per_epoch": steps,
                        "epochs": RECIPES[recipe]["epochs"]}
        for ranks in (1, 2):
            print(f"dist_speed: {recipe}, {ranks} rank(s) ...", flush=True)
            r = run_one(recipe, ranks, steps, table, args.timeout)
            rows[recipe][f"{ranks}rank"] = r
            print(f"  {r.get('images_per_sec', r.get('error'))} ({r['wall_seconds']} s)", flush=True)
        s = scaling(rows[recipe]["1rank"], rows[recipe]["2rank"])
        rows[recipe]["scaling"] = None if s is None else round(s, 3)
    table_md = markdown(rows)
    print("\n" + table_md)
    result = {"quick": args.quick, "steps_per_epoch": steps, "wall_seconds": round(time.time() - t0, 1),
              "cpu_count": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2),
              "rank_table": shown([table]), "recipes": rows, "markdown": table_md}
    (OUT / "dist_speed.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {shown([OUT / 'dist_speed.json'])} ({result['wall_seconds']} s)")
    failed = [r for r, v in rows.items() if "skipped" not in v and any("error" in v[k] for k in ("1rank", "2rank"))]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
