"""Compare run records (``${CaseName}.json``) side by side and flag regressions.

    python -m common.compare baseline.json candidate.json [more.json ...] [--threshold 0.05]

The first record is the baseline. A later record regresses when its images/sec or accuracy is lower
than the baseline's by more than ``--threshold`` (relative); the exit status is 1 then, so CI or a
user comparing an Ascend run with a GPU run sees it at once. A missing or damaged record is one ``ERROR:`` line
and exit status 2 (``common.cli``).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from .cli import RecipeError


def load_record(path) -> dict:
    p = Path(path)
    try:
        rec = json.loads(p.read_text())
    except FileNotFoundError:
        raise RecipeError(f"{p}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{p}: not a JSON run record ({exc})") from None
    if not isinstance(rec, dict) or "images_per_sec" not in rec or "accuracy" not in rec:
        raise RecipeError(f"{p}: not a run record (needs images_per_sec and accuracy)")
    rec["_path"] = str(p)
    return rec


def compare(records, threshold: float = 0.05):
    """Rows for a table plus a list of regression messages, relative to records[0]."""
    base = records[0]
    rows, regressions = [], []
    for rec in records:
        row = {"run": Path(rec["_path"]).name, "network": rec.get("network", "?"), "device": rec.get("device", "?"),
               "ranks": rec.get("rank_size", "?"), "batch": rec.get("batch_size", "?"),
               "images/sec": float(rec["images_per_sec"]), "accuracy": float(rec["accuracy"]), "flags": []}
        for key in ("images/sec", "accuracy"):
            b, v = float(base["images_per_sec" if key == "images/sec" else "accuracy"]), row[key]
            if rec is base or not (math.isfinite(b) and math.isfinite(v)) or b <= 0:
                continue
            change = (v - b) / b
            row[f"{key} change"] = change
            if change < -threshold:
                row["flags"].append(f"{key} -{-change:.1%}")
                regressions.append(f"{row['run']}: {key} {v:.4g} vs baseline {b:.4g} ({change:+.1%})")
        rows.append(row)
    return rows, regressions


def format_table(rows) -> str:
    head = ["run", "network", "device", "ranks", "batch", "images/sec", "accuracy", "flags"]
    lines = [[str(r["run"]), str(r["network"]), str(r["device"]), str(r["ranks"]), str(r["batch"]),
              f"{r['images/sec']:.2f}" + (f" ({r['images/sec change']:+.1%})" if "images/sec change" in r else ""),
              f"{r['accuracy']:.4f}" + (f" ({r['accuracy change']:+.1%})" if "accuracy change" in r else ""),
              ", ".join(r["flags"]) or "ok"] for r in rows]
    widths = [max(len(h), *(len(l[i]) for l in lines)) for i, h in enumerate(head)]
    fmt = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    return "\n".join([fmt(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(fmt, lines)])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Compare run records; the first is the baseline.")
    ap.add_argument("records", nargs="+")
    ap.add_argument("--threshold", type=float, default=0.05, help="relative drop that counts as a regression")
    args = ap.parse_args(argv)
    if not 0 <= args.threshold < 1:
        ap.error("--threshold must be in [0, 1)")
    rows, regressions = compare([load_record(p) for p in args.records], args.threshold)
    print(format_table(rows))
    for r in regressions:
        print(f"REGRESSION: {r}")
    return 1 if regressions else 0


if __name__ == "__main__":
    from common import cli
    cli.run(main, sys.argv[1:])
