"""Bench pieces for cutmix_tf2: bare tf.function Adam step of ResNet-20, profiler FLOPs, tf.data pipeline."""
from __future__ import annotations

import os

import numpy as np

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
from ci.benchlib import emit, recipe_args, timed_windows  # noqa: E402



def main() -> None:
    args = recipe_args("cutmix_tf2", 32)

    import tensorflow as tf
    import tf_keras as keras
    from src import data as recipe_data, model as recipe_model, pipeline
    from ci.benchlib import tf_util

    bs = args.batch_size
    # before any pipeline or model exists (ci/benchlib/__init__.py: why)
    matmul = tf_util.matmul_rate()
    windows = 3 if args.quick else 5
    x_tr, y_tr = recipe_data.load_arrays(args.data)[:2]
    # as train.py calls it: keyword batch size and the epoch's step count
    ds = iter(pipeline.train_dataset(x_tr, recipe_data.one_hot(y_tr), 0, 1000, 42, batch_size=bs,
                                     steps=pipeline.steps_per_epoch(len(x_tr), bs)))
    pipe = timed_windows(lambda: next(ds), bs, warmup=3, windows=windows, steps_per_window=20)

    keras.utils.set_random_seed(0)
    model = recipe_model.resnet_v1()
    opt = keras.optimizers.Adam()
    loss_fn = keras.losses.CategoricalCrossentropy()
    rs = np.random.RandomState(0)
    x = tf.constant(rs.uniform(0, 1, (bs, 32, 32, 3)).astype(np.float32))
    y = tf.constant(np.eye(10, dtype=np.float32)[rs.randint(0, 10, bs)])

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True)) + tf.add_n(model.losses)
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    bare = timed_windows(lambda: step().numpy(), bs, warmup=3, windows=windows, steps_per_window=10)

    # model FLOPs: convolutions and matmuls of the Keras forward graph, count(batch 2) - count(batch 1)
    def graph_flops(batch):
        concrete = tf.function(lambda t: model(t, training=False)).get_concrete_function(
            tf.TensorSpec([batch, 32, 32, 3], tf.float32))
        return tf_util.graph_float_ops(concrete.graph, tf_util.MODEL_OPS)
    forward_flops = graph_flops(2) - graph_flops(1)

    # op time by type: RunMetadata traces need a Session, so the same Keras model, loss and Adam update are
    # rebuilt in a tf.compat.v1 graph (tf-keras builds it symbolically there)
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
    feed = {xp: x.numpy(), yp: y.numpy()}
    for _ in range(3):
        sess.run(train_op, feed)
    op_time = tf_util.op_time_shares(sess, train_op, feed)
    sess.close()

    emit({"recipe": "cutmix_tf2", "framework": "tensorflow (tf-keras)", "framework_version":
          f"{tf.__version__} / tf-keras {keras.__version__}", "batch_size": bs, "bare": bare, "pipeline": pipe, "op_time": op_time,
          "flops_per_image_train": 3 * forward_flops,
          "flops_method": "model FLOPs: tf.compat.v1.profiler float_operation count of the Conv2D and MatMul ops "
                          "of the Keras forward graph, per image as count(batch 2) - count(batch 1), x 3 for "
                          "forward + backward (elementwise ops not counted, as for the other recipes)",
          "matmul_flops_per_sec": matmul, "threads": tf_util.threads()})


if __name__ == "__main__":
    main()
