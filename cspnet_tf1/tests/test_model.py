"""Architecture: output shape, parameter count against the original, layer names the exports rely on."""
import numpy as np
import pytest
import tensorflow as tf

import utils
from models import cspdarknet53

tf1 = tf.compat.v1
REFERENCE_PARAMS = 26_610_000  # originals.md 1.2: about 26.60 M conv + 10,250 FC = 26.61 M


@pytest.fixture(scope="module")
def net():
    graph = tf.Graph()
    with graph.as_default():
        x = tf1.placeholder(tf.float32, [None, 32, 32, 3])
        logits = cspdarknet53.classifier(x)
        sess = tf1.Session(graph=graph)
        sess.run(tf1.global_variables_initializer())
    yield graph, x, logits, sess
    sess.close()


def test_trainable_parameter_count_matches_original(net):
    graph = net[0]
    n = sum(int(np.prod(v.shape)) for v in graph.get_collection(tf1.GraphKeys.TRAINABLE_VARIABLES))
    assert abs(n - REFERENCE_PARAMS) / REFERENCE_PARAMS < 0.005, n
    assert n == 26_609_770


def test_l2_collection_holds_72_conv_kernels_and_the_fc_weight(net):
    weights = net[0].get_collection("weights")
    assert len(weights) == 73
    assert sum(len(w.shape) == 4 for w in weights) == 72 and weights[-1].shape == (1024, 10)


def test_no_normalisation_parameters_or_moving_averages(net):
    names = [v.op.name for v in net[0].get_collection(tf1.GraphKeys.GLOBAL_VARIABLES)]
    assert len(names) == 2 * 73
    assert all(n.rsplit("/", 1)[-1].startswith(("w_", "b_", "wfc", "bfc")) for n in names), names[:5]


def original_variable_names():
    """Every variable of the original's graph with its shape, written out from the scopes and tags of its
    models/cspdarknet53.py (ModelZoo-TensorFlow ID0840), independently of this recipe's builder: stage 3 names
    its blocks stage3_Block_1 and stage3_Block_2; stages 4-6 open every block as "<stage>_Block_1", which TF
    uniquifies (_Block_1, _Block_1_1, ..., _Block_1_7)."""
    convs = [("stage1/stage1_Conv2dBatchLeaky", "s1c1", 3, 3, 32)]
    convs += [(f"stage2/stage2_{scope}", tag, k, cin, cout) for scope, tag, k, cin, cout in (
        ("Conv2dBatchLeaky_1", "s2c1", 3, 32, 64), ("Split_0", "s2s0", 1, 64, 64), ("Split_1", "s2s1", 1, 64, 64),
        ("Conv2dBatchLeaky_2", "s2c2", 1, 64, 32), ("Conv2dBatchLeaky_3", "s2c3", 3, 32, 64),
        ("Conv2dBatchLeaky_4", "s2c4", 1, 64, 64))]
    for st, cin, ch, blocks in ((3, 128, 128, 2), (4, 128, 256, 8), (5, 256, 512, 8), (6, 512, 1024, 4)):
        s, half = f"stage{st}", ch // 2
        convs += [(f"{s}/{s}_Conv2dBatchLeaky_1", f"s{st}c1", 1, cin, half),
                  (f"{s}/{s}_Conv2dBatchLeaky_2", f"s{st}c2", 3, half, ch),
                  (f"{s}/{s}_Split_0", f"s{st}s0", 1, ch, half), (f"{s}/{s}_Split_1", f"s{st}s1", 1, ch, half)]
        for i in range(1, blocks + 1):
            block = f"{s}_Block_{i}" if st == 3 else f"{s}_Block_1" + (f"_{i - 1}" if i > 1 else "")
            convs += [(f"{s}/{block}", f"s{st}b{i}c1", 1, half, half), (f"{s}/{block}", f"s{st}b{i}c2", 3, half, half)]
        convs.append((f"{s}/{s}_Conv2dBatchLeaky_3", f"s{st}c3", 1, half, half))
    convs.append(("stage6", "conv", 1, 1024, 1024))
    names = {}
    for scope, tag, k, cin, cout in convs:
        names[f"{scope}/w_{tag}"], names[f"{scope}/b_{tag}"] = (k, k, cin, cout), (cout,)
    names.update({"stage6/wfc": (1024, 10), "stage6/bfc": (10,)})
    return names


def test_variable_names_and_shapes_are_the_originals_for_the_whole_graph(net):
    want = original_variable_names()
    got = {v.op.name: tuple(v.shape.as_list()) for v in net[0].get_collection(tf1.GraphKeys.GLOBAL_VARIABLES)}
    assert len(want) == 2 * 73 and got.keys() == want.keys(), sorted(got.keys() ^ want.keys())[:8]
    assert got == want


@pytest.mark.parametrize("batch", [1, 3])
def test_logits_shape_including_batch_of_one(net, batch):
    _, x, logits, sess = net
    assert logits.op.name == cspdarknet53.LOGITS_NODE == "stage6/Add_1"
    out = sess.run(logits, {x: np.random.RandomState(0).uniform(0, 255, (batch, 32, 32, 3))})
    assert out.shape == (batch, 10) and np.all(np.isfinite(out))


def test_batch_axis_normalisation_makes_outputs_depend_on_the_batch(net):
    # the original's quirk, kept on purpose: the same image gives other logits in another batch
    _, x, logits, sess = net
    rng = np.random.RandomState(1)
    a, b = rng.uniform(0, 255, (2, 4, 32, 32, 3))
    b[0] = a[0]
    out_a, out_b = sess.run(logits, {x: a}), sess.run(logits, {x: b})
    assert not np.allclose(out_a[0], out_b[0])


# -- --conv_impl: the matmul formulation must compute exactly what tf.nn.conv2d computes ------------------
@pytest.mark.parametrize("size,kernel,stride", [(1, 3, 1), (2, 3, 1), (2, 3, 2), (1, 1, 1), (2, 1, 1), (4, 1, 1),
                                                (16, 1, 1), (4, 3, 2), (3, 2, 1)])
def test_small_map_convolution_equals_conv2d_with_gradients(size, kernel, stride):
    impl = "matmul"
    rng = np.random.RandomState(size * 10 + kernel + stride)
    x_val = rng.randn(3, size, size, 5).astype(np.float32)
    w_val = rng.randn(kernel, kernel, 5, 7).astype(np.float32)
    results = {}
    for name in ("conv2d", impl):
        graph = tf.Graph()
        with graph.as_default():
            x, w = tf1.constant(x_val), tf1.constant(w_val)
            y = cspdarknet53.conv2d(x, w, stride, name)
            loss = tf.reduce_sum(y * y)
            with tf1.Session(graph=graph) as sess:
                results[name] = sess.run([y] + tf1.gradients(loss, [x, w]))
            results[name + "_convs"] = sum(op.type == "Conv2D" for op in graph.get_operations())
    for ref, got in zip(results["conv2d"], results[impl]):
        assert ref.shape == got.shape
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4 * np.abs(ref).max())
    # 1x1 kernels always become matmuls; other kernels only on maps of at most 2x2 positions
    assert results[impl + "_convs"] == (1 if kernel > 1 and size * size > 4 else 0)


# -- --bn_impl: the fused kernel must normalise exactly as moments + batch_normalization ---------------------
@pytest.mark.parametrize("shape", [(5, 4, 4, 3), (1, 2, 2, 6), (8, 1, 1, 16)])
def test_fused_batch_norm_equals_moments_with_gradients(shape):
    rng = np.random.RandomState(sum(shape))
    x_val = (rng.randn(*shape) * 3 + 1).astype(np.float32)
    dy_val = rng.randn(*shape).astype(np.float32)
    results = {}
    for fused in (False, True):
        graph = tf.Graph()
        with graph.as_default():
            x = tf1.constant(x_val)
            y = utils.batch_norm(x, fused=fused)
            with tf1.Session(graph=graph) as sess:
                results[fused] = sess.run([y] + tf1.gradients(y, [x], tf1.constant(dy_val)))
            results[str(fused) + "_fused_ops"] = sum(op.type.startswith("FusedBatchNorm")
                                                     for op in graph.get_operations())
    assert results["False_fused_ops"] == 0 and results["True_fused_ops"] == 2  # forward and its gradient
    for ref, got in zip(results[False], results[True]):
        assert ref.shape == got.shape
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5 * max(1.0, np.abs(ref).max()))
    if shape[0] > 1:  # each position normalised over the batch: mean 0, (biased) variance ~1
        np.testing.assert_allclose(results[True][0].mean(axis=0), 0, atol=1e-5)
        assert np.all(results[True][0].var(axis=0) > 0.5)


def _logits_and_grads(impl, feed_x, values=None, bn="moments"):
    graph = tf.Graph()
    with graph.as_default():
        tf1.set_random_seed(0)
        x = tf1.placeholder(tf.float32, [None, 32, 32, 3])
        logits = cspdarknet53.classifier(x, conv_impl=impl, bn_impl=bn)
        variables = graph.get_collection(tf1.GraphKeys.GLOBAL_VARIABLES)
        # the kernels only: a conv bias is removed again by the batch-axis normalisation that follows it,
        # so its true gradient is 0 and what float32 returns is rounding noise
        grads = tf1.gradients(tf.reduce_sum(tf.nn.log_softmax(logits)[:, 0]), graph.get_collection("weights"))
        convs = sum(op.type == "Conv2D" for op in graph.get_operations())
        with tf1.Session(graph=graph) as sess:
            sess.run(tf1.global_variables_initializer())
            if values is not None:
                for v, val in zip(variables, values):
                    v.load(val, sess)
            out = sess.run([logits] + grads, {x: feed_x})
            values = sess.run(variables)
    return out, values, convs


@pytest.fixture(scope="module")
def original_network():
    """The original's conv2d + moments graph on one batch: its logits and kernel gradients, its initial values
    and its Conv2D count (computed once for both formulations below)."""
    feed = np.random.RandomState(2).uniform(0, 255, (16, 32, 32, 3)).astype(np.float32)
    return (feed, *_logits_and_grads("conv2d", feed))


@pytest.mark.parametrize("bn", ["fused", "kernel"])
def test_fast_network_equals_the_original_network(bn, original_network):
    """--conv_impl matmul with the fused or kernel normalisation (kernel: the CPU default) against the
    original's conv2d + moments graph."""
    feed, ref, values, ref_convs = original_network
    got, _, convs = _logits_and_grads("matmul", feed, values, bn=bn)
    # of the 72 convs, the 43 1x1 kernels and the 13 3x3 kernels reading a map of at most 2x2 (stage 5's 8
    # blocks, stage 6's stride-2 conv and 4 blocks) become matmuls; the 16 others stay Conv2D
    assert ref_convs == 72 and convs == 16
    # 72 layers that each normalise over the batch amplify float32 summation-order differences (about 2x per
    # layer in stage 6 at batch 4, which is why the batch is 16), so compare as vectors: a wrong tap, layout
    # or statistic gives errors of order 1; measured 4.2e-4 / 4.1e-4 (logits, fused / kernel) and at most
    # 1.5e-3 (kernel gradients, both)
    rel = [np.linalg.norm(g - r) / np.linalg.norm(r) for r, g in zip(ref, got)]
    assert rel[0] < 5e-3, rel[0]
    assert max(rel[1:]) < 1e-2, max(rel[1:])


def test_auto_on_cpu_takes_what_a_timed_step_measured_fastest(monkeypatch, tmp_path):
    import time
    from common import cputune

    def fake_step(slow):
        return lambda c, b, stack: (lambda: time.sleep(0.05 if slow(c, b) else 0.005))
    for run, fast in enumerate(("conv2d", "matmul")):
        monkeypatch.setenv("MODELZOO_TUNE_CACHE", str(tmp_path / str(run)))
        monkeypatch.setattr(cspdarknet53, "training_step", fake_step(lambda c, b: c != fast))
        assert cspdarknet53.select_conv_impl("auto", "cpu") == fast
        seconds = cputune.decisions()["conv_impl"].seconds
        assert set(seconds) == {"conv2d", "matmul"} and min(seconds, key=seconds.get) == fast
    monkeypatch.setattr(cspdarknet53, "training_step", fake_step(lambda c, b: b != "fused"))
    monkeypatch.setattr(cspdarknet53.kernels, "available", lambda: (False, "test"))
    assert cspdarknet53.select_bn_impl("auto", "cpu", "matmul") == "fused"
    assert set(cputune.decisions()["bn_impl"].seconds) == {"moments", "fused"}


def test_the_probe_times_a_real_training_step():
    import contextlib
    import time
    with contextlib.ExitStack() as stack:
        step = cspdarknet53.training_step("matmul", "fused", stack, batch=2)
        t0 = time.perf_counter()
        step()
        assert 0 < time.perf_counter() - t0 < 60
    # the formulations are arguments of the builder, not module state a probe could leave changed
    assert not [n for n in vars(cspdarknet53) if n.startswith(("_conv_impl", "_bn_impl", "set_"))]


def test_auto_keeps_the_originals_conv2d_on_accelerators():
    assert cspdarknet53.select_conv_impl("auto", "npu") == "conv2d"
    assert cspdarknet53.select_conv_impl("auto", "gpu") == "conv2d"
    assert cspdarknet53.select_conv_impl("auto", "cpu") == "matmul"
    assert cspdarknet53.select_conv_impl("matmul", "npu") == "matmul"
    with pytest.raises(ValueError):
        cspdarknet53.select_conv_impl("winograd")
    assert cspdarknet53.select_bn_impl("auto", "npu") == "moments"
    assert cspdarknet53.select_bn_impl("auto", "gpu") == "moments"
    with pytest.raises(ValueError):
        cspdarknet53.select_bn_impl("layer")
    with tf.Graph().as_default(), pytest.raises(ValueError):  # the builder takes a resolved formulation only
        cspdarknet53.classifier(tf1.placeholder(tf.float32, [None, 32, 32, 3]), conv_impl="auto")


def test_mixed_precision_on_cpu_trains_in_bfloat16():
    # --mixed_precision on with --device cpu: the session's grappler rewrite runs the convolutions and matmuls
    # in bfloat16 (their T attribute in the graph that ran), the rest in float32; off: float32 throughout
    import train as recipe_train
    args = recipe_train.parse_args(["--device=cpu", "--conv_impl=matmul", "--bn_impl=fused"])
    rs = np.random.RandomState(0)
    kinds = {}
    for amp in (False, True):
        # amp on CPU is bf16 in the session config only (utils.session_config): the graph is the same
        ctx = recipe_train.Context(device="cpu", amp=amp, conv_impl="matmul", bn_impl="fused",
                                   cluster=recipe_train.dist.Cluster(), out=None, found=None, seed=0)
        graph = tf.Graph()
        with graph.as_default():
            g = recipe_train.build_graph(recipe_train.create_model(args, ctx), recipe_train.create_loss(args),
                                         recipe_train.create_optimizer(args, ctx), seed=0)
            meta = tf1.RunMetadata()
            with tf1.Session(graph=graph, config=utils.session_config("cpu", amp)) as sess:
                sess.run(tf1.global_variables_initializer())
                feed = {g["x"]: rs.uniform(0, 255, (2, 32, 32, 3)).astype(np.float32),
                        g["y"]: np.eye(10, dtype=np.float32)[[1, 2]], g["lr"]: 1e-3}
                losses = [sess.run([g["train_op"], g["loss"]], feed, options=tf1.RunOptions(
                    output_partition_graphs=True), run_metadata=meta)[1] for _ in range(2)]
        assert np.isfinite(losses).all()
        kinds[amp] = {(n.op, n.attr["T"].type) for pg in meta.partition_graphs for n in pg.node if "T" in n.attr}
    bf16 = tf.bfloat16.as_datatype_enum
    assert not [op for op, t in kinds[False] if t == bf16]
    ran_bf16 = {op for op, t in kinds[True] if t == bf16}
    assert {"Conv2D", "Conv2DBackpropFilter"} & {op.replace("_MklNative", "").replace("_Mkl", "") for op in ran_bf16}, \
        sorted(ran_bf16)


def test_training_and_test_py_run_mixed_precision_on_accelerators_as_the_original():
    """The original trains and evaluates (test.py: precision_mode allow_mix_precision) in mixed precision on
    Ascend; --mixed_precision auto does the same on npu and gpu, float32 on cpu unless asked."""
    assert utils.mixed_precision("auto", "npu") and utils.mixed_precision("auto", "gpu")
    assert not utils.mixed_precision("auto", "cpu") and utils.mixed_precision("on", "cpu")
    assert not utils.mixed_precision("off", "npu")
    from tensorflow.core.protobuf import rewriter_config_pb2
    on = rewriter_config_pb2.RewriterConfig.ON
    assert utils.session_config("gpu", True).graph_options.rewrite_options.auto_mixed_precision == on
    assert utils.session_config("gpu", False).graph_options.rewrite_options.auto_mixed_precision != on
    import test as evaluate
    assert evaluate.parse_args([]).mixed_precision == "auto"
