#!/usr/bin/env python3
"""Run every test suite, each in its own environment: ``common/tests`` and ``<recipe>/tests``.

    python ci/run_tests.py [suite ...]       (suites: common ci cspnet_tf1 cutmix_tf2 resnet50_cifar_pt sppnet_ms tinydarknet_ms)

Prints a per-suite table and a closing ``N passed, N failed`` line. Exits non-zero if any suite failed,
if a suite's tests folder is missing, or if no test ran at all.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUITES = {  # suite -> (environment, tests folder)
    "common": ("ci", "common/tests"),
    "ci": ("ci", "ci/tests"),
    "cspnet_tf1": ("tf", "cspnet_tf1/tests"),
    "cutmix_tf2": ("tf", "cutmix_tf2/tests"),
    "resnet50_cifar_pt": ("torch", "resnet50_cifar_pt/tests"),
    "sppnet_ms": ("mindspore", "sppnet_ms/tests"),
    "tinydarknet_ms": ("mindspore", "tinydarknet_ms/tests"),
}
COUNT = re.compile(r"(\d+) (passed|failed|error|errors|skipped|xfailed|xpassed)")


def run_suite(name: str):
    env_name, folder = SUITES[name]
    tests = ROOT / folder
    if not tests.is_dir():  # a suite that vanished is a failure, never a silent pass
        print(f"\n=== {name}: {folder} is missing", flush=True)
        return {"rc": 1, "seconds": 0.0, "error": 1}
    py = ROOT / ".envs" / env_name / "bin" / "python"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "MZ_PYTHON": str(py), "MPLBACKEND": "Agg"}
    if env_name == "tf":
        env["TF_USE_LEGACY_KERAS"] = "1"
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cmd = [str(py), "-m", "pytest", "-q", "-rfEs", "--durations=8", "-p", "no:cacheprovider", str(tests)]
    print(f"\n=== {name}: {' '.join(cmd[2:])} (env .envs/{env_name})", flush=True)
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=ROOT / folder.split("/")[0], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    sys.stdout.write(proc.stdout)
    counts = {}
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    for n, kind in COUNT.findall(tail):
        counts[kind.rstrip("s") if kind.startswith("error") else kind] = int(n)
    return {"rc": proc.returncode, "seconds": time.time() - t0, **counts}


def main(argv) -> int:
    names = argv or list(SUITES)
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        print(f"run_tests: unknown suite(s) {unknown}; known: {list(SUITES)}", file=sys.stderr)
        return 2
    results, t0 = {}, time.time()
    for name in names:
        results[name] = run_suite(name)
    print("\n| suite | passed | failed | errors | skipped | seconds |\n|---|---|---|---|---|---|")
    passed = failed = 0
    for name, r in results.items():
        p, f, e, s = r.get("passed", 0), r.get("failed", 0), r.get("error", 0), r.get("skipped", 0)
        if r["rc"] not in (0,) and f == 0 and e == 0:
            e = 1  # pytest crashed or found nothing: count the suite as an error
        passed, failed = passed + p, failed + f + e
        print(f"| {name} | {p} | {f} | {e} | {s} | {r['seconds']:.0f} |")
    print(f"total time {time.time() - t0:.0f} s")
    print(f"{passed} passed, {failed} failed")
    if passed == 0:
        print("run_tests: no test ran", file=sys.stderr)
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
