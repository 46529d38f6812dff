"""Framework-side pieces of `make bench` (ci/bench.py runs each recipe's module in its environment).

Each ``<recipe>.py`` here prints one JSON object (after the marker ``BENCH_JSON:``) with the bare step
loop's throughput, the model's counted FLOPs per training image, the framework's measured dense matmul
rate and the input pipeline's throughput, all in the same process and framework.

Each module measures the matmul rate first, before it builds a model or an input pipeline: measured last,
after the model, the profiler and the pipelines' workers had run in the same process, it read up to 40% low
(MindSpore: 105-117 GFLOP/s in a bench run, 175-178 in a quiet process; each stage took some off), and MFU
read high by as much.
"""
from __future__ import annotations

import json
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def recipe_args(recipe: str, batch_size: int, **extra):
    """Put ``<recipe>/`` on sys.path (its modules import as in its own entry points) and parse the common
    flags ``--data --batch_size --quick`` plus ``extra`` (name -> (type, default))."""
    import argparse
    if str(ROOT / recipe) not in sys.path:
        sys.path.insert(0, str(ROOT / recipe))
    ap = argparse.ArgumentParser(description=f"bench pieces of {recipe}")
    ap.add_argument("--data", required=True, help="synthetic data in the recipe's format")
    ap.add_argument("--batch_size", type=int, default=batch_size)
    ap.add_argument("--quick", action="store_true", help="fewer timed windows")
    for name, (typ, default) in extra.items():
        ap.add_argument(f"--{name}", type=typ, default=default)
    args = ap.parse_args()
    if recipe in ("cspnet_tf1", "cutmix_tf2"):
        # before TensorFlow is imported: the bare loop runs the kernels the recipe's train.py chose on this host
        from common.tf_onednn import choose_tf_onednn_opts
        choose_tf_onednn_opts()
    return args


def timed_windows(step, images_per_step: int, warmup: int = 3, windows: int = 5, steps_per_window: int = 5) -> dict:
    """Run ``step()`` ``warmup`` times untimed, then ``windows`` timed windows; median images/sec."""
    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    warm = time.perf_counter() - t0
    rates = []
    for _ in range(windows):
        t = time.perf_counter()
        for _ in range(steps_per_window):
            step()
        rates.append(images_per_step * steps_per_window / (time.perf_counter() - t))
    return {"images_per_sec": statistics.median(rates), "window_images_per_sec": [round(r, 3) for r in rates],
            "warmup_seconds": round(warm, 3), "warmup_steps": warmup, "steps_per_window": steps_per_window}


def emit(result: dict) -> None:
    result.setdefault("python", platform.python_version())
    result.setdefault("threads_env", {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")})
    result.setdefault("cpu_count", os.cpu_count())
    print("BENCH_JSON:" + json.dumps(result), flush=True)


def conv_dense_flops(layers) -> int:
    """2 x multiply-accumulates of conv and dense layers: ``layers`` yields
    ('conv', cin_per_group, cout, kh, kw, hout, wout) or ('dense', fin, fout)."""
    total = 0
    for layer in layers:
        if layer[0] == "conv":
            _, cin, cout, kh, kw, ho, wo = layer
            total += 2 * cin * cout * kh * kw * ho * wo
        else:
            _, fin, fout = layer
            total += 2 * fin * fout
    return total


# op types that run a model's convolutions and matmuls, in TF traces and MindSpore's profiler alike: their
# gradients and oneDNN's _MklNative* / _MklFused* forms included
MODEL_OP_TIME = re.compile(r"Conv2D|MatMul")


def op_time_summary(per_type: dict, steps: int, top: int = 6) -> dict:
    """``per_type`` (op type -> time over ``steps`` traced steps) as shares: that of MODEL_OP_TIME's ops and
    the ``top`` largest; {} when nothing was timed."""
    total = sum(per_type.values())
    if not total:
        return {}
    model = sum(v for k, v in per_type.items() if MODEL_OP_TIME.search(k))
    ranked = sorted(per_type.items(), key=lambda kv: -kv[1])[:top]
    return {"traced_steps": steps, "model_ops_share": round(model / total, 4),
            "top_ops": [[k, round(v / total, 4)] for k, v in ranked]}
