"""Learning check on the real digits data through the real entry point, with a fixed step budget.

Hyper-parameters are the recipe's defaults (lr 1e-3 constant, momentum 0.9, LAMBDA 5e-4, raw 0-255 input)
except two test-time knobs: batch 16 instead of 64 (four times as many updates for the same compute) and
validation in batches of 100 test images instead of 16. The network normalises with the statistics of the
batch it is given, at test time too, so 16-image test batches give noisy statistics and a lower score for
the same weights. Budget: two epochs (186 steps). Measured with --seed 0 (TF op determinism on), top-1 on the
300 held-out images after 1 / 2 / 3 epochs: 0.6285 / 0.7639 / 0.7708 in test batches of 16, 0.7667 /
0.8667 / 0.8933 in test batches of 100 (chance 0.1); 140 steps gave 0.8233.
"""
import re

from conftest import python


def test_two_epochs_on_digits_reach_80_percent(digits, tmp_path):
    _, stdout, _ = python("train.py", f"--data_path={digits}", f"--output_path={tmp_path}", "--epochs=2",
                          "--batch_size=16", "--eval_batch_size=100", "--seed=0", "--device=cpu", "--VAL_EPOCH=2",
                          timeout=1800)
    accuracy = float(re.findall(r"^Validation accuracy: (\S+)", stdout, re.M)[-1])
    assert accuracy >= 0.8, stdout[-2000:]
