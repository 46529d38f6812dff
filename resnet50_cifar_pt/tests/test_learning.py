"""Learning check: the recipe's model, pipeline and optimiser learn the 10 digits well above chance.

Fixed budget: STEPS iterations of batch 16 on one CPU process (the first STEPS x 16 training images, one
pass), then the 300 test images. Overrides, all through --cfg-options, and why:
- lr 0.05 with a 15-step linear warm-up and the head at 0.1x: the recipe's lr 0.1 is tuned for 200 epochs at
  8 x 16; from a zero-initialised residual start it swings the 100-way head for the first hundred steps,
  longer than a test on 2 cores can afford;
- no horizontal flip: digits are not mirror-symmetric (the flip is a CIFAR augmentation).
Measured on this machine this budget gives 0.20 top-1 (see README), so this check fails until the budget
grows to several epochs; the threshold stays at the project's 0.8.
"""
from __future__ import annotations

from common.banner import parse_banner
from conftest import run, train_cmd

STEPS = 90
OVERRIDES = ["data.samples_per_gpu=16", "data.workers_per_gpu=0", "runner.max_epochs=1", "optimizer.lr=0.05",
             "optimizer.paramwise_cfg.custom_keys.head.lr_mult=0.1", "lr_config.warmup=linear",
             "lr_config.warmup_iters=15", "lr_config.warmup_ratio=0.1", "data.train.pipeline.1.flip_prob=0.0"]


def test_digits_reach_80_percent_top1_within_the_step_budget(digits, tmp_path):
    r = run(train_cmd(tmp_path, "--seed", "0", "--train-steps", str(STEPS), "--cfg-options", *OVERRIDES))
    assert r.returncode == 0, r.stdout[-3000:]
    accuracy = parse_banner(r.stdout)["accuracy"]
    assert accuracy >= 0.8, f"top-1 {accuracy:.3f} on the 300 digits test images after {STEPS} steps"
