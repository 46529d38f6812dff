"""Helpers of the CSPNet recipe: layer primitives, CIFAR-10 input, device and session setup.

Mirrors ``utils.py`` of Ascend ModelZoo-TensorFlow CSPNet_ID0840; the CIFAR files are read through
``common.cifar`` (restricted unpickler) instead of a bare ``pickle.load``.
"""
import importlib.util
import os

import numpy as np
import tensorflow as tf

from common.cifar import DatasetError, load_cifar10

tf1 = tf.compat.v1

NUM_CLASSES = 10
# The normalisation uses the statistics of whatever batch it is given, so the test set must be cut into
# the same batches every time for test.py to reproduce training-time validation: one fixed permutation.
EVAL_SHUFFLE_SEED = 0


# -- layer primitives ---------------------------------------------------------------------------------
def weight(shape, name):
    w = tf1.Variable(tf1.truncated_normal(shape, stddev=0.01), name=name)
    tf1.add_to_collection("weights", w)  # the L2 term covers exactly this collection
    return w


def bias(value, shape, name):
    return tf1.Variable(tf1.constant(value, shape=shape), name=name)


def batch_norm(x, fused=False):
    """Per-position statistics over the batch axis, eps 1e-3, no scale/offset, no moving averages.

    ``fused``: the same normalisation as one FusedBatchNorm kernel (forward and gradient) instead of the
    original's moments + batch_normalization (~8 elementwise passes each way). Flattened to [B, 1, 1, H*W*C],
    every position is a channel of the fused op, whose statistics over (batch, 1, 1) are exactly the
    batch-axis ones; it normalises with the biased variance, as tf.nn.moments does.
    """
    if not fused:
        mean, var = tf.nn.moments(x, axes=[0])
        return tf.nn.batch_normalization(x, mean, var, None, None, 1e-3)
    h, w, c = (int(d) for d in x.shape[1:])
    n = h * w * c
    y, _, _ = tf1.nn.fused_batch_norm(tf.reshape(x, [-1, 1, 1, n]), tf.ones([n]), tf.zeros([n]),
                                      epsilon=1e-3, is_training=True)
    return tf.reshape(y, [-1, h, w, c])


def mish(x):
    return x * tf.math.tanh(tf.math.softplus(x))


# -- data -------------------------------------------------------------------------------------------------
def onehot(labels, num_classes=NUM_CLASSES):
    return np.eye(num_classes, dtype=np.float32)[labels]


def load_cifar(path):
    """``(x_train, y_train, x_test, y_test)``: uint8 NHWC images (raw 0-255, never rescaled) and one-hot labels."""
    x_tr, y_tr, x_te, y_te, _ = load_cifar10(path)
    return x_tr, onehot(y_tr), x_te, onehot(y_te)


def random_batch(n, batch_size, rng):
    """Index arrays of the batches of one pass: a shuffle, the remainder dropped (as the original)."""
    if n < batch_size:
        raise DatasetError(f"{n} images cannot fill one batch of {batch_size}")
    idx = rng.permutation(n)
    return np.split(idx[: n - n % batch_size], n // batch_size)


def eval_batches(n, batch_size):
    return random_batch(n, batch_size, np.random.RandomState(EVAL_SHUFFLE_SEED))


def augment(images, rng, pad=4):
    """Opt-in (--augment): random crop from a zero-padded image and a random horizontal flip."""
    b, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    dy, dx = rng.randint(0, 2 * pad + 1, size=(2, b))
    flip = rng.rand(b) < 0.5
    out = np.empty_like(images)
    for i in range(b):
        crop = padded[i, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
        out[i] = crop[:, ::-1] if flip[i] else crop
    return out


# -- device and session ------------------------------------------------------------------------------------
def npu_available():
    return importlib.util.find_spec("npu_bridge") is not None


def gpu_available():
    return bool(tf.config.list_physical_devices("GPU"))


def select_device(device="auto"):
    """'auto' -> npu if the Ascend TF adapter imports, else gpu if one is visible, else cpu."""
    if device == "auto":
        return "npu" if npu_available() else "gpu" if gpu_available() else "cpu"
    if device == "npu" and not npu_available():
        raise RuntimeError("--device npu: the Ascend TensorFlow adapter (npu_bridge) is not installed")
    if device == "gpu" and not gpu_available():
        raise RuntimeError("--device gpu: TensorFlow sees no GPU")
    if device not in ("cpu", "gpu", "npu"):
        raise ValueError(f"unknown device {device!r}: expected auto|cpu|gpu|npu")
    return device


def cpu_threads():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


MIXED_PRECISION_HELP = ("auto: on for gpu/npu (as the original on Ascend: allow_mix_precision), off on cpu; on for "
                        "cpu: bfloat16 (oneDNN's bf16 graph rewrite; fast only on CPUs with AVX512_BF16 or AMX)")


def mixed_precision(flag, device):
    """--mixed_precision auto|on|off on ``device``: the original trains and tests in mixed precision on Ascend."""
    return flag == "on" or (flag == "auto" and device != "cpu")


def session_config(device, mixed_precision=False):
    config = tf1.ConfigProto(allow_soft_placement=True,
                             intra_op_parallelism_threads=cpu_threads(),
                             # the graph is one long chain: more than two concurrent ops only oversubscribes
                             inter_op_parallelism_threads=2)
    if device == "cpu":
        config.device_count["GPU"] = 0
        if mixed_precision:
            # bfloat16 (opt-in on CPU): grappler casts the ops oneDNN runs in bf16 and keeps the rest (the loss,
            # the normalisation + Mish kernel) in float32; no loss scaling is needed with bf16's exponent range
            from tensorflow.core.protobuf import rewriter_config_pb2
            config.graph_options.rewrite_options.auto_mixed_precision_onednn_bfloat16 = \
                rewriter_config_pb2.RewriterConfig.ON
    elif device == "gpu":
        config.gpu_options.allow_growth = True
        if mixed_precision:  # grappler's float16 rewrite (training adds loss scaling to it through the optimizer)
            from tensorflow.core.protobuf import rewriter_config_pb2
            config.graph_options.rewrite_options.auto_mixed_precision = rewriter_config_pb2.RewriterConfig.ON
    elif device == "npu":
        import npu_bridge.npu_init  # noqa: F401  registers the NpuOptimizer graph pass
        custom = config.graph_options.rewrite_options.custom_optimizers.add()
        custom.name = "NpuOptimizer"
        custom.parameter_map["use_off_line"].b = True
        custom.parameter_map["precision_mode"].s = tf.compat.as_bytes(
            "allow_mix_precision" if mixed_precision else "force_fp32")
        from tensorflow.core.protobuf import rewriter_config_pb2
        config.graph_options.rewrite_options.remapping = rewriter_config_pb2.RewriterConfig.OFF  # as the original
    return config


def format_time(seconds):
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    d, h = divmod(h, 24)
    return f"{d:02d}d {h:02d}h {m:02d}m {s:02d}s"
