"""Architecture: output shape, parameter count against the original, layer names the exports rely on."""
import numpy as np
import pytest
import tensorflow as tf

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


def test_variable_names_follow_the_original_checkpoint(net):
    names = {v.op.name for v in net[0].get_collection(tf1.GraphKeys.GLOBAL_VARIABLES)}
    assert "stage1/stage1_Conv2dBatchLeaky/w_s1c1" in names
    assert "stage4/stage4_Block_1_7/w_s4b8c2" in names
    assert "stage6/wfc" in names and "stage6/w_conv" in names


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
