"""Learning check: the recipe's model, pipeline and optimiser learn the 10 digits well above chance.

Fixed budget: STEPS iterations of batch 16 (first STEPS x 16 training images, one pass) on one CPU process.
The recipe's lr of 0.1 is tuned for 200 epochs at 8 x 16 and jumps around for the first hundred steps, too
long for a test on 2 cores, so this run lowers it (and only it) through --cfg-options.
"""
from __future__ import annotations

from common.banner import parse_banner
from conftest import run, train_cmd

STEPS = 60
LR = 0.002


def test_digits_reach_80_percent_top1_within_the_step_budget(digits, tmp_path):
    r = run(train_cmd(tmp_path, "--seed", "0", "--train-steps", str(STEPS),
                      "--cfg-options", "data.samples_per_gpu=16", "data.workers_per_gpu=0", f"optimizer.lr={LR}",
                      "runner.max_epochs=1"), timeout=600)
    assert r.returncode == 0, r.stdout[-3000:]
    accuracy = parse_banner(r.stdout)["accuracy"]
    assert accuracy >= 0.8, f"top-1 {accuracy:.3f} on the 300 digits test images after {STEPS} steps"
