"""Timed TensorFlow training step for common/tf_onednn.py's probe (run as a child process).

Convolutions, batch normalisation, ReLU, pooling and a dense layer on a batch of 32 CIFAR-sized images,
forward, backward and an SGD update in one tf.function (no Keras: its import would be timed too): the op mix of both TensorFlow recipes. The
setting under test (TF_ENABLE_ONEDNN_OPTS) comes from the environment. Prints
``MODELZOO_PROBE_SECONDS <best step seconds>``.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from common.cputune import PROBE_RESULT, time_steps  # noqa: E402


def main():
    tf.random.set_seed(0)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.random((32, 32, 32, 3), dtype=np.float32))
    y = tf.constant(rng.integers(0, 10, 32))
    shapes = [(3, 3, 3, 32), (3, 3, 32, 64), (3, 3, 64, 128), (1, 1, 128, 128)]
    kernels = [tf.Variable(rng.normal(0, 0.1, s).astype(np.float32)) for s in shapes]
    dense = tf.Variable(rng.normal(0, 0.1, (128, 10)).astype(np.float32))

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            h = x
            for i, k in enumerate(kernels):
                h = tf.nn.conv2d(h, k, 1, "SAME")
                mean, var = tf.nn.moments(h, [0, 1, 2])
                h = tf.nn.relu(tf.nn.batch_normalization(h, mean, var, None, None, 1e-3))
                if i in (1, 2):
                    h = tf.nn.max_pool2d(h, 2, 2, "VALID")
            logits = tf.matmul(tf.reduce_mean(h, [1, 2]), dense)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
        variables = kernels + [dense]
        for v, g in zip(variables, tape.gradient(loss, variables)):
            v.assign_sub(0.01 * g)
        return loss

    print(PROBE_RESULT, time_steps(lambda: step().numpy(), warmup=2, repeat=5), flush=True)


if __name__ == "__main__":
    main()
