"""Bench pieces for cspnet_tf1: bare Session step loop of the recipe's graph, profiler FLOPs, pipeline."""
from __future__ import annotations

import numpy as np

from ci.benchlib import emit, recipe_args, timed_windows


def main() -> None:
    args = recipe_args("cspnet_tf1", 64)

    import tensorflow as tf
    tf1 = tf.compat.v1
    tf1.disable_eager_execution()
    import train as recipe_train  # cspnet_tf1/train.py
    import utils
    from models import cspdarknet53
    from ci.benchlib import tf_util

    bs = args.batch_size
    # before any pipeline or model exists (ci/benchlib/__init__.py: why)
    matmul = tf_util.matmul_rate()
    windows = 3 if args.quick else 5
    # bare loop: the recipe's own graph (model, loss, L2, Momentum) on one fixed in-memory batch, built by
    # train.py's create_* functions with its default flags on CPU (so its formulations: auto, probed here)
    flags = recipe_train.parse_args(["--device=cpu", "--seed=0", f"--batch_size={bs}"])
    ctx = recipe_train.setup(flags)
    graph = tf.Graph()
    with graph.as_default():
        g = recipe_train.build_graph(recipe_train.create_model(flags, ctx), recipe_train.create_loss(flags),
                                     recipe_train.create_optimizer(flags, ctx), seed=0)
        sess = tf1.Session(graph=graph, config=utils.session_config("cpu"))
        sess.run(tf1.global_variables_initializer())
    rs = np.random.RandomState(0)
    feed = {g["x"]: rs.uniform(0, 255, (bs, 32, 32, 3)).astype(np.float32),
            g["y"]: np.eye(10, dtype=np.float32)[rs.randint(0, 10, bs)], g["lr"]: 1e-3}
    bare = timed_windows(lambda: sess.run(g["train_op"], feed), bs, warmup=3, windows=windows,
                         steps_per_window=4 if args.quick else 8)
    op_time = tf_util.op_time_shares(sess, g["train_op"], feed)
    sess.close()

    # model FLOPs per image: the profiler's count of the convolutions and matmuls (tf_util.MODEL_OPS) of the
    # original's all-Conv2D forward graph - every 3x3 tap, padding taps included, the way FLOPs of a CNN are
    # conventionally stated - as count(batch 2) - count(batch 1); a training step counts as 3x forward. The
    # graph the recipe runs executes fewer multiply-adds (--conv_impl matmul skips the padding taps of the
    # <=2x2 maps; work done once per step, such as building the block matrices, is not per image): that count
    # is reported beside it
    def forward_flops(conv_impl, bn_impl):
        counts = []
        for batch in (1, 2):
            fwd = tf.Graph()
            with fwd.as_default():
                cspdarknet53.classifier(tf1.placeholder(tf.float32, [batch, 32, 32, 3]), conv_impl=conv_impl,
                                        bn_impl=bn_impl)
                counts.append(tf_util.graph_float_ops(fwd, tf_util.MODEL_OPS))
        return counts[1] - counts[0]
    model_flops = forward_flops("conv2d", "moments")
    run_flops = forward_flops("matmul", "fused")

    # the recipe's input path alone: load the pickles once, then index, cast and one-hot each batch
    x_tr, y_tr, _, _ = utils.load_cifar(args.data)[:4]
    order = rs.permutation(len(x_tr))
    pos = [0]

    def next_batch():
        i = pos[0] % max(1, len(order) // bs)
        idx = order[i * bs:(i + 1) * bs]
        pos[0] += 1
        return x_tr[idx].astype(np.float32), y_tr[idx]
    pipe = timed_windows(next_batch, bs, warmup=2, windows=windows, steps_per_window=20)

    emit({"recipe": "cspnet_tf1", "framework": "tensorflow", "framework_version": tf.__version__, "batch_size": bs,
          "bare": bare, "pipeline": pipe, "op_time": op_time, "flops_per_image_train": 3 * model_flops,
          "flops_method": "model FLOPs: tf.compat.v1.profiler float_operation count of the Conv2D and MatMul ops of "
                          "the original's all-Conv2D forward graph, per image as count(batch 2) - count(batch 1), x 3 "
                          "for forward + backward (elementwise ops not counted, as for the other recipes); the graph "
                          "the recipe runs skips the padding taps of the <=2x2 maps and executes "
                          f"{3 * run_flops / 1e9:.3f} GFLOP/img of them",
          "matmul_flops_per_sec": matmul, "threads": tf_util.threads()})


if __name__ == "__main__":
    main()
