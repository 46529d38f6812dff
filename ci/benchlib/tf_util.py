"""TensorFlow pieces: dense matmul rate and graph FLOP counting (tf.compat.v1 profiler)."""
from __future__ import annotations

import time
from collections import Counter

import tensorflow as tf

from ci.benchlib import op_time_summary


def matmul_rate(n: int = 2048, reps: int = 20) -> float:
    """float32 FLOP/s of an n x n matmul chain run as one graph, best of 3 (a tf.function when eager is
    on; a tf.compat.v1 Session on variables when a TF1-style caller has turned eager execution off)."""
    scale = 1.0 / n ** 0.5

    def chain(x, y):
        # each product feeds the next, so grappler cannot fold repeated identical matmuls into one
        for _ in range(reps):
            x = tf.matmul(x, y) * scale
        return x

    if tf.executing_eagerly():
        a, b = tf.random.normal((n, n)), tf.random.normal((n, n))
        fn = tf.function(chain)
        run = lambda: fn(a, b).numpy()  # noqa: E731
    else:
        graph = tf.Graph()
        with graph.as_default():
            a = tf.compat.v1.get_variable("mm_a", initializer=tf.random.normal((n, n)))
            b = tf.compat.v1.get_variable("mm_b", initializer=tf.random.normal((n, n)))
            out = chain(a, b)
            sess = tf.compat.v1.Session(graph=graph)
            sess.run(tf.compat.v1.global_variables_initializer())
        run = lambda: sess.run(out)  # noqa: E731
    run()
    best = 0.0
    for _ in range(3):
        t = time.perf_counter()
        run()
        best = max(best, 2 * n ** 3 * reps / (time.perf_counter() - t))
    return best


# the ops that carry a CNN's model FLOPs; the MindSpore and PyTorch counts also take convolutions and
# matmuls only, so MFU means the same thing for every recipe
MODEL_OPS = ("Conv2D", "DepthwiseConv2dNative", "MatMul", "BatchMatMul.*")


def graph_float_ops(graph, op_types=None) -> int:
    """Float ops the tf.compat.v1 profiler counts in ``graph`` (forward ops with known shapes); with
    ``op_types`` (regexes, e.g. MODEL_OPS) only the ops of those types."""
    opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    if op_types:
        opts["account_type_regexes"] = list(op_types)
    prof = tf.compat.v1.profiler.profile(graph, options=opts)
    return int(prof.total_float_ops)


def threads() -> dict:
    return {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads()}


def op_time_shares(sess, fetches, feed, steps: int = 3, top: int = 6) -> dict:
    """Share of op time per op type over ``steps`` fully traced Session runs (RunMetadata step stats).

    Each kernel's own wall time is summed by type (kernels overlap under inter-op parallelism, so this is
    a share of the op time, close to a share of CPU time); summarised by ci.benchlib.op_time_summary.
    """
    run_options = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)
    per_type = Counter()
    for _ in range(steps):
        meta = tf.compat.v1.RunMetadata()
        sess.run(fetches, feed, options=run_options, run_metadata=meta)
        for dev in meta.step_stats.dev_stats:
            for node in dev.node_stats:
                # timeline_label reads "name = OpType(inputs)"; bookkeeping nodes have none
                label = node.timeline_label
                op = label.split(" = ", 1)[1].split("(", 1)[0] if " = " in label else node.node_name
                per_type[op] += node.all_end_rel_micros
    return op_time_summary(per_type, steps, top)
