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

bf16 (--mixed_precision on: oneDNN's bfloat16 rewrite, float32 weights), run only where the CPU has bf16 in
hardware (common.testing.bf16_case). Measured on a 2-core Intel Xeon with AVX512_BF16 and AMX, this command,
top-1 after three epochs: seed 0 0.690 (0.343 / 0.547 after epochs 1 / 2), seed 1 0.863, seed 2 0.843,
seed 3 0.780, seed 4 0.887; about 80 s a run on that host. bf16 rounding draws its own trajectory, seed 0 the
lowest of five, so its threshold is 0.6 (0.09 below that seed, 6x chance).
"""
import json
import re

import pytest

from common import testing
from conftest import python


@pytest.mark.parametrize("precision", [pytest.param("off", id="fp32"), testing.bf16_case("on")])
def test_three_epochs_on_digits_reach_70_percent_and_rise(digits, tmp_path, precision):
    """fp32 (the CPU default) and --mixed_precision on, which on CPU is oneDNN's bfloat16 graph rewrite."""
    _, stdout, _ = python("train.py", f"--data_path={digits}", f"--output_path={tmp_path}", "--epochs=3",
                          "--batch_size=16", "--eval_batch_size=100", "--seed=0", "--device=cpu", "--VAL_EPOCH=1",
                          f"--mixed_precision={precision}", timeout=1800)
    assert f"mixed precision {'bf16' if precision == 'on' else 'off'}," in stdout
    # the run record, <case>.json (case: <network>_bs<batch>_<ranks>p_acc)
    assert [json.loads(p.read_text()).get("mixed_precision") for p in tmp_path.glob("*_1p_acc.json")] == \
        [precision == "on"]
    accuracy = [float(a) for a in re.findall(r"^Validation accuracy: (\S+)", stdout, re.M)]
    assert len(accuracy) == 3, stdout[-2000:]
    assert accuracy[-1] >= (0.6 if precision == "on" else 0.7) and accuracy[-1] > accuracy[0], stdout[-2000:]
