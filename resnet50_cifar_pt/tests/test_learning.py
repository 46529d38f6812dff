"""Learning check: the recipe's model, loss, optimiser and pipeline learn the 10 digits far above chance.

Fixed budget: 3 epochs of the 1,497 training digits at batch 32 (141 steps) on one CPU process, then the
300 test images. The budget only fits two cores at 16 x 16 inputs; ``tests/configs/digits_learning_16px.py``
says what else differs from the recipe and why.

Threshold 0.70 top-1 (chance 0.10), set from the spread over seeds; a run is deterministic for a given seed,
host and thread count. Measured on the 2-core AMD EPYC (AVX2 only, no AVX-512), top-1 after epoch 3:
- the test's settings (default 2 threads, contiguous memory format): seed 0 0.833, seed 1 0.877, seed 2 0.787,
  seed 3 0.907 (after epoch 2: 0.60-0.72);
- one thread (OMP_NUM_THREADS=1): seed 0 0.890, seed 1 0.893, seed 2 0.777 (the same seed lands elsewhere
  with another thread count: float rounding changes the trajectory).
Lowest 0.777, so 0.70 leaves 23 images of margin below the worst of 7 runs (and 40 below seed 0 here). Not
measured on an Intel AVX-512 host, whose kernels round differently: expect a draw from a spread like the above.
Duration: 181 s on an idle host; with the other suites on the same two cores (load ~17) a step took about 95 s
(the former 1800 s limit ended the run after some 18 of its 141 steps), so the run has no timeout of its own
(the CI job's applies).

Also run with --amp (bfloat16 autocast on CPU) where the CPU has bf16 in hardware (common.testing.bf16_case;
emulated bf16 takes ~100 s a step at batch 4). On a 2-core Intel Xeon with AVX512_BF16 and AMX, seed 0: bf16
0.857 after epoch 3.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from common import testing
from common.banner import parse_banner
from conftest import run, train_cmd

CONFIG = Path(__file__).resolve().parent / "configs" / "digits_learning_16px.py"
THRESHOLD = 0.70


@pytest.mark.parametrize("amp", [pytest.param([], id="fp32"), testing.bf16_case(["--amp"])])
def test_digits_reach_70_percent_top1_within_the_step_budget(digits, tmp_path, amp):
    """fp32 (the CPU default) and --amp, which on CPU is bfloat16 autocast (the originals train in mixed
    precision on their accelerators)."""
    r = run(train_cmd(tmp_path, "--seed", "0", *amp, config=CONFIG), timeout=None)
    assert r.returncode == 0, r.stdout[-3000:]
    # the run record, <case>.json (case: <network>_bs<batch>_<ranks>p_acc; mmcv's JSON-lines log lies beside it)
    records = [json.loads(p.read_text()) for p in tmp_path.glob("*_1p_acc.json")]
    assert [rec["amp"] for rec in records] == [bool(amp)], [p.name for p in tmp_path.glob("*.json")]
    accuracy = parse_banner(r.stdout)["accuracy"]
    assert accuracy >= THRESHOLD, f"top-1 {accuracy:.3f} on the 300 digits test images after 3 epochs ({amp})"
