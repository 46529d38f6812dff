"""Learning check: the recipe's model, loss, optimiser and pipeline learn the 10 digits far above chance.

Fixed budget: 3 epochs of the 1,497 training digits at batch 32 (141 steps) on one CPU process, then the
300 test images. The budget only fits two cores at 16 x 16 inputs; ``tests/configs/digits_learning_16px.py``
says what else differs from the recipe and why. Measured: 0.157 / 0.633 / 0.833 top-1 after epochs 1-3
(seed 0, deterministic on CPU), about 2.5 minutes on an idle 2-core machine.
"""
from __future__ import annotations

from pathlib import Path

from common.banner import parse_banner
from conftest import run, train_cmd

CONFIG = Path(__file__).resolve().parent / "configs" / "digits_learning_16px.py"


def test_digits_reach_80_percent_top1_within_the_step_budget(digits, tmp_path):
    r = run(train_cmd(tmp_path, "--seed", "0", config=CONFIG))
    assert r.returncode == 0, r.stdout[-3000:]
    accuracy = parse_banner(r.stdout)["accuracy"]
    assert accuracy >= 0.8, f"top-1 {accuracy:.3f} on the 300 digits test images after 3 epochs"
