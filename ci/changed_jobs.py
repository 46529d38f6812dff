#!/usr/bin/env python3
"""Which per-directory CI jobs a change needs: `python ci/changed_jobs.py BASE [HEAD]` prints a JSON list.

Used by `.github/workflows/smoke.yml` to build its job matrix. A recipe's smoke job runs when its folder or
common/ changed (every recipe imports common/); the common job when common/ changed; the ci job when ci/ or
common/ changed; everything when the environments' definition (ci/setup_envs.py, the Makefile, .ci/) changed.
"""
from __future__ import annotations

import json
import subprocess
import sys
from typing import Iterable, List

RECIPES = ("cspnet_tf1", "cutmix_tf2", "resnet50_cifar_pt", "sppnet_ms", "tinydarknet_ms")
EVERYTHING = ("Makefile", ".ci/", ".github/", "ci/setup_envs.py", "ci/make_data.py", "ci/smoke.py")
ALL = [*RECIPES, "common", "ci"]


def jobs_for(paths: Iterable[str]) -> List[str]:
    paths = [p.strip() for p in paths if p.strip()]
    if any(p == e or p.startswith(e) for p in paths for e in EVERYTHING):
        return list(ALL)
    top = {p.split("/", 1)[0] for p in paths if "/" in p}
    shared = "common" in top
    jobs = [r for r in RECIPES if r in top or shared]
    if shared:
        jobs.append("common")
    if shared or "ci" in top:
        jobs.append("ci")
    return jobs


def main(argv) -> int:
    if not 1 <= len(argv) <= 2:
        print("usage: changed_jobs.py BASE [HEAD]", file=sys.stderr)
        return 2
    head = argv[1] if len(argv) == 2 else "HEAD"
    proc = subprocess.run(["git", "diff", "--name-only", f"{argv[0]}...{head}"], capture_output=True, text=True)
    if proc.returncode != 0:  # an unknown base (a first push, a force push): run everything
        print(json.dumps(ALL))
        return 0
    print(json.dumps(jobs_for(proc.stdout.splitlines())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
