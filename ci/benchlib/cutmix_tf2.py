"""Bench pieces for cutmix_tf2: the recipe's Keras train step of ResNet-20 + Adam, profiler FLOPs, tf.data pipeline.

The model, the loss and the optimiser come from the recipe's own ``train.create_model`` / ``create_optimizer``
(after ``train.setup``: the device and precision policy a training run would use), and the bare step is the
compiled model's own ``train_step``, so the bare loop is the recipe's step minus the input pipeline and the
callbacks.
"""
from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
from ci.benchlib import emit, recipe_args, timed_windows  # noqa: E402


def main() -> None:
    args = recipe_args("cutmix_tf2", 32)

    import tensorflow as tf
    import tf_keras as keras
    import train as recipe
    from ci.benchlib import tf_util

    bs = args.batch_size
    out = tempfile.mkdtemp(prefix="bench_cutmix_")
    # epochs: enough back-to-back epochs of the data for every timed pipeline window
    run = recipe.parse_args([f"--data_dir={args.data}", f"--batch_size={bs}", f"--output_path={out}", "--epochs=1000"])
    ctx = recipe.setup(run)  # numpy data checks, device, precision policy, seeds: no pipeline or model yet
    # before any pipeline or model exists (ci/benchlib/__init__.py: why)
    matmul = tf_util.matmul_rate()
    windows = 3 if args.quick else 5
    data = recipe.create_data(run, ctx)
    ds = iter(data.train(0))  # the training pipeline exactly as train.py's fit consumes it
    pipe = timed_windows(lambda: next(ds), bs, warmup=3, windows=windows, steps_per_window=20)

    model = recipe.create_model(run, ctx)
    recipe.create_optimizer(run, ctx, model)
    rs = np.random.RandomState(0)
    x = tf.constant(rs.uniform(0, 1, (bs, 32, 32, 3)).astype(np.float32))
    y = tf.constant(np.eye(10, dtype=np.float32)[rs.randint(0, 10, bs)])

    # Keras' own step (loss + L2 terms, Adam update, BatchNorm statistics, the accuracy metric), as fit runs it
    step = tf.function(lambda: model.train_step((x, y)))

    bare = timed_windows(lambda: step()["loss"].numpy(), bs, warmup=3, windows=windows, steps_per_window=10)

    # model FLOPs: convolutions and matmuls of the Keras forward graph, count(batch 2) - count(batch 1)
    def graph_flops(batch):
        concrete = tf.function(lambda t: model(t, training=False)).get_concrete_function(
            tf.TensorSpec([batch, 32, 32, 3], tf.float32))
        return tf_util.graph_float_ops(concrete.graph, tf_util.MODEL_OPS)
    forward_flops = graph_flops(2) - graph_flops(1)

    op_time = _op_time(x.numpy(), y.numpy())
    emit({"recipe": "cutmix_tf2", "framework": "tensorflow (tf-keras)", "batch_size": bs,
          "framework_version": f"{tf.__version__} / tf-keras {keras.__version__}", "bare": bare, "pipeline": pipe,
          "op_time": op_time,
          "flops_per_image_train": 3 * forward_flops,
          "flops_method": "model FLOPs: tf.compat.v1.profiler float_operation count of the Conv2D and MatMul ops "
                          "of the Keras forward graph, per image as count(batch 2) - count(batch 1), x 3 for "
                          "forward + backward (elementwise ops not counted, as for the other recipes)",
          "matmul_flops_per_sec": matmul, "threads": tf_util.threads()})
    shutil.rmtree(out, ignore_errors=True)


def _op_time(x, y):
    """Op time by type. RunMetadata traces need a Session, so the same Keras model, loss and Adam update are
    rebuilt in a tf.compat.v1 graph (tf-keras builds it symbolically there)."""
    import tensorflow as tf
    import tf_keras as keras
    from src import model as recipe_model
    from ci.benchlib import tf_util

    tf1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        xp, yp = tf1.placeholder(tf.float32, x.shape), tf1.placeholder(tf.float32, y.shape)
        traced = recipe_model.resnet_v1()
        loss = tf.reduce_mean(keras.losses.categorical_crossentropy(yp, traced(xp, training=True)))
        loss += tf.add_n(traced.losses)
        train_op = tf.group(tf1.train.AdamOptimizer().minimize(loss, var_list=traced.trainable_variables),
                            *traced.get_updates_for(xp))  # with the BN moving-average updates of this call
        sess = tf1.Session(graph=graph)
        sess.run(tf1.global_variables_initializer())
    feed = {xp: x, yp: y}
    for _ in range(3):
        sess.run(train_op, feed)
    op_time = tf_util.op_time_shares(sess, train_op, feed)
    sess.close()
    return op_time


if __name__ == "__main__":
    main()
