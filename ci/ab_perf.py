#!/usr/bin/env python3
"""Is a change slower? The recipes' performance runs at two commits, alternated old/new/new/old on this host.

    python ci/ab_perf.py --old REV [--new HEAD] [recipe ...] [--out docs/ab_perf.json]

Each recipe's ``test/train_performance_1p.sh`` runs with ``make bench``'s settings (ci/bench.py RECIPES: data,
epochs, batch) four times, old/new/new/old (a drift of the machine's speed over the minutes then falls on both
sides alike), each commit from its own git worktree sharing this checkout's ``.envs`` and ``data``. images/sec
is each run's own steady-state figure from its JSON record. Prints a table (per recipe: both runs of each side,
their means, the change, and the spread between the two runs of one side, the noise of this measurement) and
writes it with the raw figures to ``--out``. Run it alone on the machine: a second busy process distorts it.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from ci.bench import RECIPES, synthetic_data  # noqa: E402
from common.checkpoint import atomic_write_text  # noqa: E402

ORDER = ("old", "new", "new", "old")


def worktree(rev: str, where: Path) -> Path:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(where), rev], check=True)
    for shared in (".envs", "data"):
        if (ROOT / shared).exists():
            (where / shared).symlink_to(ROOT / shared)
    return where


def perf_run(tree: Path, name: str, data: Path, out: Path) -> dict:
    spec = RECIPES[name]
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.time()
    proc = subprocess.run(["bash", str(tree / name / "test" / "train_performance_1p.sh"), f"--data_path={data}",
                           f"--output_path={out}", "--device=cpu", *spec["args"]], cwd=tree,
                          env=dict(os.environ, PYTHONPATH=str(tree)), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    records = sorted(out.glob("*_perf.json"))
    if proc.returncode != 0 or not records:
        raise SystemExit(f"ERROR: {tree / name}: the performance run failed (exit {proc.returncode}):\n"
                         f"{proc.stdout[-2000:]}")
    return {"images_per_sec": json.loads(records[0].read_text())["images_per_sec"],
            "wall_seconds": round(time.time() - t0, 1)}


def summarise(runs: list) -> dict:
    side = {v: [r["images_per_sec"] for r in runs if r["side"] == v] for v in ("old", "new")}
    mean = {v: sum(x) / len(x) for v, x in side.items()}
    spread = max((max(x) - min(x)) / (sum(x) / len(x)) for x in side.values())
    return {"old": side["old"], "new": side["new"], "old_mean": round(mean["old"], 3),
            "new_mean": round(mean["new"], 3), "change": round(mean["new"] / mean["old"] - 1, 4),
            "noise": round(spread, 4)}


def table(results: dict) -> str:
    rows = ["| recipe | old runs (img/s) | new runs (img/s) | old mean | new mean | change | noise (spread of one side) |",
            "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        s = r["summary"]
        rows.append(f"| {name} | {', '.join(f'{x:.2f}' for x in s['old'])} | {', '.join(f'{x:.2f}' for x in s['new'])} "
                    f"| {s['old_mean']:.2f} | {s['new_mean']:.2f} | {100 * s['change']:+.1f}% | {100 * s['noise']:.1f}% |")
    return "\n".join(rows) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("recipes", nargs="*", default=list(RECIPES))
    ap.add_argument("--old", required=True, help="the commit before the change")
    ap.add_argument("--new", default="HEAD")
    ap.add_argument("--out", default=str(ROOT / "docs" / "ab_perf.json"))
    args = ap.parse_args(argv)
    unknown = [r for r in args.recipes if r not in RECIPES]
    if unknown:
        ap.error(f"unknown recipe(s) {unknown}; known: {list(RECIPES)}")
    base = Path(tempfile.mkdtemp(prefix="ab_perf_"))
    trees = {}
    try:
        trees = {side: worktree(rev, base / side) for side, rev in (("old", args.old), ("new", args.new))}
        results = {}
        for name in args.recipes:
            spec = RECIPES[name]
            data = synthetic_data(spec["format"], spec["n_train"])
            runs = []
            for i, side in enumerate(ORDER):
                r = perf_run(trees[side], name, data, base / "out" / f"{name}_{i}_{side}")
                runs.append({"side": side, **r})
                print(f"{name} {side}: {r['images_per_sec']:.2f} img/s ({r['wall_seconds']} s)", flush=True)
            results[name] = {"runs": runs, "summary": summarise(runs)}
        rev = lambda r: subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", r],  # noqa: E731
                                       capture_output=True, text=True).stdout.strip()
        report = {"old": rev(args.old), "new": rev(args.new), "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                  "results": results, "table": table(results)}
        atomic_write_text(Path(args.out), json.dumps(report, indent=1))
        print(report["table"])
    finally:
        for tree in trees.values():
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
