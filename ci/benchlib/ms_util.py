"""MindSpore pieces: dense matmul rate and conv/dense FLOP counting by walking a network's cells.

MindSpore has no built-in FLOP counter for CPU graphs; the count here is 2 x MACs of every Conv2d and
Dense cell at the shapes seen in one PyNative forward pass (forward hooks), times 3 for a training
step (backward = 2 x forward for these layers). Pooling, BN, activations and LRN are left out (they
are a few percent and not matmul-shaped).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ci.benchlib import op_time_summary


def matmul_rate(n: int = 2048, reps: int = 20) -> float:
    import mindspore as ms
    from mindspore import ops
    a = ms.Tensor(np.random.randn(n, n).astype(np.float32))
    b = ms.Tensor(np.random.randn(n, n).astype(np.float32))
    ops.matmul(a, b).asnumpy()
    best = 0.0
    for _ in range(3):
        t = time.perf_counter()
        out = None
        for _ in range(reps):
            out = ops.matmul(a, b)
        out.asnumpy()
        best = max(best, 2 * n ** 3 * reps / (time.perf_counter() - t))
    return best


def uncapped_matmul_rate():
    """``matmul_rate`` with oneDNN free to use every ISA level, in a child process (oneDNN reads its cap once per
    process); None where this process is not capped (``matmul_rate`` is that figure) or the child fails.

    The recipes cap oneDNN at AVX2 where their convolutions would otherwise fall to a reference kernel
    (common/onednn.py), which caps MindSpore's MatMul too: the MFU column is against that capped rate, this one
    says what the same MatMul reaches on the CPU's widest kernels."""
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL") == "ALL":
        return None
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "ALL",
           "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    # the recipes' context (graph mode on the CPU device): the PyNative default runs MatMul at about half the rate
    code = ("import mindspore as ms; ms.set_context(mode=ms.GRAPH_MODE); ms.set_device('CPU'); "
            "from ci.benchlib.ms_util import matmul_rate; print('MATMUL_FLOPS', matmul_rate())")
    try:
        proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True,
                              timeout=600)
    except subprocess.TimeoutExpired:
        return None
    found = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("MATMUL_FLOPS ")]
    return float(found[-1]) if proc.returncode == 0 and found else None


def forward_flops(net, x) -> int:
    """Count conv/dense FLOPs of one forward pass of ``net`` on ``x`` (batch 1 recommended)."""
    import mindspore as ms
    from mindspore import nn
    layers, handles = [], []

    def conv_hook(cell, inputs, output):
        cin = cell.in_channels // cell.group
        kh, kw = cell.kernel_size
        layers.append(("conv", cin, cell.out_channels, kh, kw, output.shape[2], output.shape[3]))

    def dense_hook(cell, inputs, output):
        layers.append(("dense", cell.in_channels, cell.out_channels))

    for _, cell in net.cells_and_names():
        if isinstance(cell, nn.Conv2d):
            handles.append(cell.register_forward_hook(conv_hook))
        elif isinstance(cell, nn.Dense):
            handles.append(cell.register_forward_hook(dense_hook))
    mode = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        net(x)
    finally:
        ms.set_context(mode=mode)
        for h in handles:
            h.remove()
    from ci.benchlib import conv_dense_flops
    return conv_dense_flops(layers) // x.shape[0]


def op_time_shares(step, steps: int = 2, top: int = 6) -> dict:
    """Share of op time per op type over ``steps`` calls of ``step()`` under MindSpore's Profiler (its CPU
    op-type table, cpu_op_type_info_*.csv), summarised by ci.benchlib.op_time_summary."""
    import csv
    import glob
    import shutil
    import tempfile
    import mindspore as ms
    out = tempfile.mkdtemp(prefix="ms_profile_")
    try:
        profiler = ms.Profiler(output_path=out)
        for _ in range(steps):
            step()
        profiler.stop()
        profiler.analyse()
        per_type = {}
        for path in glob.glob(os.path.join(out, "**", "cpu_op_type_info_*.csv"), recursive=True):
            with open(path, newline="") as f:
                for row in csv.DictReader(f):
                    per_type[row["op_type"]] = per_type.get(row["op_type"], 0.0) + float(row["total_compute_time"])
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return op_time_summary(per_type, steps, top)


def bare_and_pipeline(net, loss, opt, batch_size: int, image_size: int, make_dataset, quick: bool,
                      steps_per_window: int, step_cell=None) -> tuple:
    """(bare step loop, input pipeline, op-time shares of the bare step), the bare loop and the pipeline timed
    the same way for both recipes.

    The bare loop calls ``step_cell(x, y)`` (the recipe's own train step, e.g. its ``Model``'s
    ``train_network``: AMP level and loss scale included) on one fixed random batch; without one, a plain
    ``TrainOneStepCell`` of ``net``, ``loss`` and ``opt``. ``make_dataset()`` returns a fresh batched dataset of
    the recipe's own training pipeline, re-created whenever a pass runs out.
    """
    import mindspore as ms
    from mindspore import nn
    from ci.benchlib import timed_windows
    windows = 3 if quick else 5
    if step_cell is None:
        step_cell = nn.TrainOneStepCell(nn.WithLossCell(net, loss), opt)
    step_cell.set_train()
    rs = np.random.RandomState(0)
    x = ms.Tensor(rs.randn(batch_size, 3, image_size, image_size).astype(np.float32))
    y = ms.Tensor(rs.randint(0, 1000, batch_size).astype(np.int32))
    bare = timed_windows(lambda: step_cell(x, y).asnumpy(), batch_size, warmup=2, windows=windows,
                         steps_per_window=2 if quick else steps_per_window)
    op_time = op_time_shares(lambda: step_cell(x, y).asnumpy())
    it = [None]

    def next_batch():
        try:
            next(it[0])
        except (StopIteration, TypeError):
            it[0] = make_dataset().create_tuple_iterator(num_epochs=1)
            next(it[0])
    pipe = timed_windows(next_batch, batch_size, warmup=2, windows=windows, steps_per_window=3)
    return bare, pipe, op_time
