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
    windows = 3 if args.quick else 5
    # bare loop: the recipe's own graph (model, loss, L2, Momentum) on one fixed in-memory batch
    graph = tf.Graph()
    with graph.as_default():
        g = recipe_train.build_graph(5e-4, 0.9, False, 0)
        sess = tf1.Session(graph=graph, config=utils.session_config("cpu"))
        sess.run(tf1.global_variables_initializer())
    rs = np.random.RandomState(0)
    feed = {g["x"]: rs.uniform(0, 255, (bs, 32, 32, 3)).astype(np.float32),
            g["y"]: np.eye(10, dtype=np.float32)[rs.randint(0, 10, bs)], g["lr"]: 1e-3}
    bare = timed_windows(lambda: sess.run(g["train_op"], feed), bs, warmup=3, windows=windows,
                         steps_per_window=4 if args.quick else 8)
    sess.close()

    # forward FLOPs per image from the profiler, as count(batch 2) - count(batch 1): work done once per step
    # whatever the batch (variable initialisers, building the block matrices from the weights) is not charged
    # to every image. A training step counts as 3x forward. The count is of the graph the recipe runs
    # (--conv_impl matmul skips the padding taps of the <=2x2 maps); the conventional all-Conv2D count, which
    # includes them, is reported beside it
    def forward_flops(impl):
        counts = []
        for batch in (1, 2):
            fwd = tf.Graph()
            with fwd.as_default():
                cspdarknet53.set_conv_impl(impl)
                cspdarknet53.classifier(tf1.placeholder(tf.float32, [batch, 32, 32, 3]))
                counts.append(tf_util.graph_float_ops(fwd))
        return counts[1] - counts[0]
    conv2d_flops = forward_flops("conv2d")
    run_flops = forward_flops("matmul")

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
          "bare": bare, "pipeline": pipe, "flops_per_image_train": 3 * run_flops,
          "flops_per_image_train_conventional": 3 * conv2d_flops,
          "flops_method": "tf.compat.v1.profiler float_operation count of the forward graph the recipe runs, per "
                          "image as count(batch 2) - count(batch 1) (conv, matmul, elementwise with known shapes) "
                          "x 3 for forward + backward; the "
                          f"conventional all-Conv2D count, which includes the padding taps of the <=2x2 maps, is "
                          f"{3 * conv2d_flops / 1e9:.3f} GFLOP/img (MFU on it would read "
                          f"{conv2d_flops / run_flops:.2f}x higher)",
          "matmul_flops_per_sec": tf_util.matmul_rate(), "threads": tf_util.threads()})


if __name__ == "__main__":
    main()
