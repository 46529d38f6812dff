"""CSPDarknet53 for 32x32 CIFAR input, built from tf.compat.v1 variables and tf.nn ops.

Mirrors ``models/cspdarknet53.py`` of Ascend ModelZoo-TensorFlow CSPNet_ID0840 (layer table in
``shared/reference/originals.md`` section 1.2), including its quirks:
- "Conv2dBatchLeaky" blocks use Mish, not leaky ReLU;
- the normalisation takes statistics over the batch axis only, has no scale/offset and no moving
  averages (utils.batch_norm), so even inference uses the statistics of the batch it is given;
- SmallBlock has no residual addition; the only shortcut of the network is in stage 2;
- the head squeezes the 1x1 map instead of pooling, then a 1024->10 fully connected layer.

Variable and name-scope names follow the original so that its checkpoints restore into this graph,
and the logits op is ``stage6/Add_1``, the output node the Ascend ACL companion freezes.
"""
import os

import numpy as np
import tensorflow as tf

from common import cputune

import kernels
import utils

tf1 = tf.compat.v1

LOGITS_NODE = "stage6/Add_1"
# (stage, input channels of the fuse conv, channels after the stride-2 conv, SmallBlocks)
CSP_STAGES = ((3, 128, 128, 2), (4, 128, 256, 8), (5, 256, 512, 8), (6, 512, 1024, 4))


# Two formulation choices: how a layer is computed, never what it computes. Both are arguments of classifier()
# (and of the blocks it builds), so a graph's formulation is whatever its builder was given.
# Convolutions (conv_impl): "conv2d" is the original's tf.nn.conv2d for every layer; "matmul" computes 1x1
# kernels, and 3x3 kernels on maps of at most 2x2 positions (stages 5 and 6), as matrix products (see conv2d).
# Normalisation + the Mish after it (bn_impl): "moments" is the original's tf.nn.moments +
# tf.nn.batch_normalization, then Mish from Softplus, Tanh and Mul; "fused" is one FusedBatchNorm kernel per
# layer (utils.batch_norm), then the same Mish ops; "kernel" is normalisation and Mish in one compiled CPU
# kernel, forward and gradient (kernels/bn_mish.cc). The flags' "auto" keeps the original on Ascend and GPU
# (every rewrite here was measured on CPUs only; the accelerators' conv and normalisation kernels are another
# matter) and on CPU takes what a timed training step of the whole network on this host says is fastest
# (select_conv_impl / select_bn_impl).
CONV_IMPLS = ("auto", "matmul", "conv2d")
BN_IMPLS = ("auto", "kernel", "fused", "moments")
MAX_BLOCK_POSITIONS = 4  # largest map (H*W) a 3x3 kernel runs as a matmul on


def _check(flag, choices, impl):
    if impl not in choices:
        raise ValueError(f"{flag} must be one of {choices}, got {impl!r}")


def select_conv_impl(impl, device="cpu"):
    """The formulation the --conv_impl flag of train.py / test.py asks for, "auto" resolved (and recorded).

    "auto" on CPU times a training step of the whole network in each formulation on this host (cached per
    host, common/cputune.py) and keeps the original's conv2d unless matmul is measurably faster.
    """
    _check("conv_impl", CONV_IMPLS, impl)
    if impl == "auto" and device == "cpu":
        return cputune.probe_steps("conv_impl", ["conv2d", "matmul"],
                                   lambda c, stack: training_step(c, "fused", stack),
                                   default="conv2d", key=_probe_key()).choice
    if impl == "auto":
        return cputune.record("conv_impl", "conv2d", "rule", note=f"the original's on {device}").choice
    cputune.record("conv_impl", impl, "user", note="--conv_impl")
    return impl


def select_bn_impl(impl, device="cpu", conv_impl="matmul"):
    """The normalisation's formulation the --bn_impl flag asks for, "auto" resolved (and recorded).

    "kernel" needs the kernel library (raises kernels.KernelUnavailable, saying why, if it cannot be
    built) and a CPU: its ops have no GPU or NPU implementation. "auto" on CPU times a training step of
    the whole network (with the convolutions ``conv_impl``) in each formulation this host can run, and
    keeps the original's moments unless another is measurably faster; it prints why the kernel is left
    out where the library cannot be built.
    """
    _check("bn_impl", BN_IMPLS, impl)
    if impl == "auto" and device == "cpu":
        candidates = ["moments", "fused"]
        ok, why = kernels.available()
        if ok:
            candidates.append("kernel")
        else:
            print(f"--bn_impl auto: the CPU kernel is unavailable ({why}); choosing between fused and moments",
                  flush=True)
        return cputune.probe_steps("bn_impl", candidates, lambda b, stack: training_step(conv_impl, b, stack),
                                   default="moments", key=_probe_key() + f"; conv_impl {conv_impl}").choice
    if impl == "auto":
        return cputune.record("bn_impl", "moments", "rule", note=f"the original's on {device}").choice
    if impl == "kernel":
        if device != "cpu":
            raise ValueError(f"--bn_impl kernel is a CPU kernel; on {device} use fused or moments")
        kernels.load()
    cputune.record("bn_impl", impl, "user", note="--bn_impl")
    return impl


def _probe_key():
    # the kernels behind each formulation change with TensorFlow's version and its oneDNN setting
    return f"tensorflow {tf.__version__}; TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS')}; step v2"


def training_step(conv_impl, bn_impl, stack, batch=16):
    """A callable running one SGD step of the whole network on a fixed batch, built with the given formulations
    in a graph of its own (the CPU probe's step; its session is closed by the ExitStack ``stack``)."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf1.constant(np.random.RandomState(0).uniform(0, 255, [batch, 32, 32, 3]).astype(np.float32))
        logits = classifier(x, conv_impl=conv_impl, bn_impl=bn_impl)
        step = tf1.train.GradientDescentOptimizer(1e-6).minimize(tf.reduce_mean(tf.square(logits)))
        init = tf1.global_variables_initializer()
    sess = stack.enter_context(tf1.Session(graph=graph, config=utils.session_config("cpu")))
    sess.run(init)
    return lambda: sess.run(step)


def _same_offsets(size, kernel, stride):
    """Output size and the leading pad of TF's SAME padding along one axis."""
    out = -(-size // stride)
    return out, max((out - 1) * stride + kernel - size, 0) // 2


def conv2d(x, w, stride, impl="conv2d"):
    """SAME convolution of NHWC ``x`` with HWIO ``w``; equal to tf.nn.conv2d up to summation order.

    ``impl`` "conv2d" is tf.nn.conv2d itself; "matmul" rewrites the layers below as matrix products.

    Why: from stage 4 on the maps are 4x4 down to 1x1, where oneDNN's convolution kernels (above all
    the filter gradient) run at a small fraction of the CPU's matmul rate; a 1x1 kernel on stage 6's
    1x1 map took ~60x longer than the same product as a MatMul. So a 1x1 kernel becomes one MatMul
    over all positions, and a 3x3 kernel on a small map becomes one MatMul against the block matrix
    of the taps each (input position, output position) pair meets: padding taps are skipped, not
    multiplied by zero. Gradients follow by autodiff.
    """
    kh, kw, cin, cout = (int(d) for d in w.shape)
    h, wd = int(x.shape[1]), int(x.shape[2])
    pointwise = kh == kw == 1 and stride == 1
    _check("conv_impl", CONV_IMPLS[1:], impl)
    if impl == "conv2d" or not (pointwise or h * wd <= MAX_BLOCK_POSITIONS):
        return tf.nn.conv2d(x, w, strides=[1, stride, stride, 1], padding="SAME")
    if pointwise:
        y = tf.matmul(tf.reshape(x, [-1, cin]), tf.reshape(w, [cin, cout]))
        return tf.reshape(y, [-1, h, wd, cout])
    (ho, pt), (wo, pl) = _same_offsets(h, kh, stride), _same_offsets(wd, kw, stride)
    if ho * wo == 1 and h * wd == 1:
        # one position: the tap it meets, as a slice. Needed for reproducibility, not speed: through the
        # selection product below, runs were not bit-identical (the resume test failed; cause not found)
        return tf.reshape(tf.matmul(tf.reshape(x, [-1, cin]), w[pt, pl]), [-1, 1, 1, cout])
    # index of the tap that input position (p, q) meets at output position (i, j); kh*kw = none (zero)
    taps = [[(a * kw + b) if 0 <= a < kh and 0 <= b < kw else kh * kw
             for i in range(ho) for j in range(wo) for a, b in [(p - i * stride + pt, q - j * stride + pl)]]
            for p in range(h) for q in range(wd)]
    # the block matrix as a product with a constant 0/1 selection matrix: its gradient is a matmul too.
    # (A gather was as fast, but the segment sum of its gradient varied in the last bits run to run, and a
    # slice per block made a full-size zero-padded copy of w per block in the backward pass.)
    select = np.zeros([h * wd * ho * wo, kh * kw], np.float32)
    for row, tap in enumerate(t for per_p in taps for t in per_p):
        if tap < kh * kw:
            select[row, tap] = 1.0
    big = tf.matmul(tf.constant(select), tf.reshape(w, [kh * kw, cin * cout]))  # [h*wd*ho*wo, cin*cout]
    big = tf.reshape(tf.transpose(tf.reshape(big, [h * wd, ho * wo, cin, cout]), [0, 2, 1, 3]),
                     [h * wd * cin, ho * wo * cout])
    y = tf.matmul(tf.reshape(x, [-1, h * wd * cin]), big)
    return tf.reshape(y, [-1, ho, wo, cout])


def conv_block(x, kernel_size, in_channels, out_channels, stride, tag, impl):
    """conv (SAME, bias) -> batch-axis normalisation -> Mish; ``tag`` names the variables w_<tag>, b_<tag>.

    ``impl``: the (conv_impl, bn_impl) pair of classifier().
    """
    conv_impl, bn_impl = impl
    w = utils.weight([kernel_size, kernel_size, in_channels, out_channels], name="w_" + tag)
    b = utils.bias(0.0, [out_channels], name="b_" + tag)
    x = tf.add(conv2d(x, w, stride, conv_impl), b)
    if bn_impl == "kernel":
        return kernels.batch_norm_mish(x)
    return utils.mish(utils.batch_norm(x, fused=bn_impl == "fused"))


def small_block(x, channels, tag, impl):
    x = conv_block(x, 1, channels, channels, 1, tag + "c1", impl)
    return conv_block(x, 3, channels, channels, 1, tag + "c2", impl)


def _stage2(x, impl):
    with tf.name_scope("stage2"):
        with tf.name_scope("stage2_Conv2dBatchLeaky_1"):
            down = conv_block(x, 3, 32, 64, 2, "s2c1", impl)
        with tf.name_scope("stage2_Split_0"):
            part0 = conv_block(down, 1, 64, 64, 1, "s2s0", impl)
        with tf.name_scope("stage2_Split_1"):
            part1 = conv_block(down, 1, 64, 64, 1, "s2s1", impl)
        with tf.name_scope("stage2_Conv2dBatchLeaky_2"):
            r = conv_block(part1, 1, 64, 32, 1, "s2c2", impl)
        with tf.name_scope("stage2_Conv2dBatchLeaky_3"):
            r = conv_block(r, 3, 32, 64, 1, "s2c3", impl)
        r = tf.add(r, part1)
        with tf.name_scope("stage2_Conv2dBatchLeaky_4"):
            r = conv_block(r, 1, 64, 64, 1, "s2c4", impl)
        return tf.concat([part0, r], axis=3)


def _csp_stage(x, stage, in_channels, channels, blocks, impl):
    """fuse 1x1 -> 3x3/2 -> two 1x1 splits -> SmallBlocks on split 1 -> transition -> concat."""
    half, s = channels // 2, f"stage{stage}"
    with tf.name_scope(s):
        with tf.name_scope(f"{s}_Conv2dBatchLeaky_1"):
            x = conv_block(x, 1, in_channels, channels // 2, 1, f"s{stage}c1", impl)
        with tf.name_scope(f"{s}_Conv2dBatchLeaky_2"):
            x = conv_block(x, 3, channels // 2, channels, 2, f"s{stage}c2", impl)
        with tf.name_scope(f"{s}_Split_0"):
            part0 = conv_block(x, 1, channels, half, 1, f"s{stage}s0", impl)
        with tf.name_scope(f"{s}_Split_1"):
            r = conv_block(x, 1, channels, half, 1, f"s{stage}s1", impl)
        for i in range(1, blocks + 1):
            # the original's scope names: stage 3 numbers its two blocks (_Block_1, _Block_2); stages 4-6 reuse
            # "<stage>_Block_1" for every block, which TF uniquifies to _Block_1, _Block_1_1, _Block_1_2, ...
            with tf.name_scope(f"{s}_Block_{i if stage == 3 else 1}"):
                r = small_block(r, half, f"s{stage}b{i}", impl)
        with tf.name_scope(f"{s}_Conv2dBatchLeaky_3"):
            r = conv_block(r, 1, half, half, 1, f"s{stage}c3", impl)
        return tf.concat([part0, r], axis=3)


def classifier(x, num_classes=10, conv_impl="conv2d", bn_impl="moments"):
    """Logits [B, num_classes] for a float32 NHWC batch [B, 32, 32, 3] of raw 0-255 pixels.

    ``conv_impl`` / ``bn_impl``: the formulation (see CONV_IMPLS / BN_IMPLS, "auto" excluded: resolve it with
    select_conv_impl / select_bn_impl first); the default is the original's ops.
    """
    _check("conv_impl", CONV_IMPLS[1:], conv_impl)
    _check("bn_impl", BN_IMPLS[1:], bn_impl)
    impl = (conv_impl, bn_impl)
    with tf.name_scope("stage1"):
        with tf.name_scope("stage1_Conv2dBatchLeaky"):
            x = conv_block(x, 3, 3, 32, 1, "s1c1", impl)
    x = _stage2(x, impl)
    for stage, cin, ch, blocks in CSP_STAGES:
        x = _csp_stage(x, stage, cin, ch, blocks, impl)
    with tf.name_scope("stage6/"):  # re-enter the scope so the head's ops land in stage6/ as in the original
        x = conv_block(x, 1, 1024, 1024, 1, "conv", impl)
        # squeeze only the spatial axes: a bare squeeze would also drop the batch axis at batch size 1
        x = tf.squeeze(x, axis=[1, 2])
        wfc = utils.weight([1024, num_classes], name="wfc")
        bfc = utils.bias(0.0, [num_classes], name="bfc")
        logits = tf.add(tf.matmul(x, wfc), bfc, name="Add_1")
    return logits
