"""Does XLA reach the hand-written normalisation + Mish kernel? (BENCHMARKS.md, cspnet_tf1 section.)

The recipe's own training graph (model, loss, L2, Momentum; --conv_impl matmul) on one in-memory batch, in
five variants: the compiled kernel (--bn_impl kernel), FusedBatchNorm + Mish ops (fused), the original's
moments + Mish ops (moments), and fused and moments again with XLA auto-clustering on (global_jit_level
ON_1 with --tf_xla_cpu_global_jit, which lets XLA fuse the elementwise chains of the normalisation and Mish
that the kernel fuses by hand). All sessions are built first, then timed one after another, round after
round, so that drift of the machine hits every variant alike.

    .envs/tf/bin/python -m ci.benchlib.cspnet_xla [--batch_size 64] [--rounds 4]
"""
from __future__ import annotations

import os
import statistics
import time

# read by TensorFlow when a session with a global jit level first compiles: harmless for the other sessions
os.environ.setdefault("TF_XLA_FLAGS", "--tf_xla_cpu_global_jit")

import numpy as np  # noqa: E402

import argparse  # noqa: E402
import sys  # noqa: E402

from ci.benchlib import ROOT, emit  # noqa: E402

VARIANTS = [("kernel", False), ("fused", False), ("moments", False), ("fused", True), ("moments", True)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch_size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=4, help="timed windows per variant, alternated")
    ap.add_argument("--steps", type=int, default=5, help="steps per window")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "cspnet_tf1"))  # its modules import as in its own entry points
    from common.tf_onednn import choose_tf_onednn_opts
    choose_tf_onednn_opts()
    import tensorflow as tf
    tf1 = tf.compat.v1
    tf1.disable_eager_execution()
    import train as recipe_train
    import utils

    bs = args.batch_size
    rs = np.random.RandomState(0)
    x = rs.uniform(0, 255, (bs, 32, 32, 3)).astype(np.float32)
    y = np.eye(10, dtype=np.float32)[rs.randint(0, 10, bs)]
    runs = {}
    for bn, xla in VARIANTS:
        # the recipe's create_* functions, as train.py --conv_impl=matmul --bn_impl=<bn> on CPU builds them
        flags = recipe_train.parse_args(["--device=cpu", "--seed=0", "--conv_impl=matmul", f"--bn_impl={bn}"])
        ctx = recipe_train.setup(flags)
        graph = tf.Graph()
        with graph.as_default():
            g = recipe_train.build_graph(recipe_train.create_model(flags, ctx), recipe_train.create_loss(flags),
                                         recipe_train.create_optimizer(flags, ctx), seed=0)
            config = utils.session_config("cpu")
            if xla:
                config.graph_options.optimizer_options.global_jit_level = tf1.OptimizerOptions.ON_1
            sess = tf1.Session(graph=graph, config=config)
            sess.run(tf1.global_variables_initializer())
        feed = {g["x"]: x, g["y"]: y, g["lr"]: 1e-3}
        t0 = time.perf_counter()
        for _ in range(3):  # warm-up: XLA compiles its clusters here
            sess.run(g["train_op"], feed)
        name = f"{bn}{' + XLA' if xla else ''}"
        runs[name] = {"sess": sess, "op": g["train_op"], "feed": feed, "warmup_seconds": time.perf_counter() - t0,
                      "rates": []}
    for _ in range(args.rounds):
        for name, r in runs.items():
            t = time.perf_counter()
            for _ in range(args.steps):
                r["sess"].run(r["op"], r["feed"])
            r["rates"].append(bs * args.steps / (time.perf_counter() - t))
    result = {name: {"images_per_sec": round(statistics.median(r["rates"]), 2),
                     "window_images_per_sec": [round(v, 2) for v in r["rates"]],
                     "warmup_seconds": round(r["warmup_seconds"], 2)} for name, r in runs.items()}
    for r in runs.values():
        r["sess"].close()
    kernel = result["kernel"]["images_per_sec"]
    for name, r in result.items():
        r["vs_kernel"] = round(r["images_per_sec"] / kernel, 3)
    emit({"recipe": "cspnet_tf1", "measure": "xla_vs_kernel", "batch_size": bs, "variants": result,
          "tf_xla_flags": os.environ.get("TF_XLA_FLAGS"), "tf_version": tf.__version__})


if __name__ == "__main__":
    main()
