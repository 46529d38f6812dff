"""Learning check on the real digits data through the real entry point, with a fixed step budget.

Hyper-parameters are the recipe's defaults (lr 1e-3 constant, momentum 0.9, LAMBDA 5e-4, raw 0-255 input)
except two test-time knobs: batch 16 instead of 64 (four times as many updates for the same compute) and
validation in batches of 100 test images instead of 16. The network normalises with the statistics of the
batch it is given, at test time too, so 16-image test batches give noisy statistics and a lower score for
the same weights. Budget: three epochs (279 steps), validated after each.

Why three epochs and 0.7: with a constant lr of 1e-3 in front of 72 scale-free normalisations the training
path is chaotic - the loss of the original's ops (--bn_impl moments) and of FusedBatchNorm differ in the
second digit five steps in, from float32 rounding alone - so a fixed seed's score moves whenever a kernel's
rounding does, as if another seed had been drawn. Measured top-1 in test batches of 100 after epochs
1 / 2 / 3, this command with --seed 0, 1, 2, on the host's auto choices (oneDNN on, --conv_impl matmul,
--bn_impl kernel): seed 0 0.7067 / 0.7967 / 0.8367, seed 1 0.5033 / 0.6600 / 0.7667, seed 2 0.6300 /
0.8233 / 0.8700. Spread after three epochs 0.767 - 0.870 (chance 0.1); every seed rises every epoch; the
threshold is 0.067 below the worst seed and 0.137 below seed 0, the one the test runs. Host: lscpu model
name "AMD EPYC" (2 cores, AVX2 + FMA, no AVX-512), shared with other test suites. Not measured on an Intel
AVX-512 host (none here): its kernels round differently, which moves seed 0 like another seed would.
Earlier measurements (before the per-host CPU tuning) gave 0.8367 / 0.7667 / 0.8833 after three epochs
with the kernel normalisation, and FusedBatchNorm after two epochs 0.8900 / 0.6200 / 0.8533.
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
