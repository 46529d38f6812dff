"""Architecture: ResNet-20 v1 in the Keras style of the original (conv biases, bare projection shortcuts)."""
import numpy as np
import tf_keras as keras

from src.model import TOTAL_PARAMS, TRAINABLE_PARAMS, count_params, resnet_v1

PYTORCH_STYLE_RESNET20 = 272_474  # the figure the issue quotes: no conv biases, BN on the shortcut


def test_output_is_a_softmax_over_ten_classes():
    model = resnet_v1()
    y = model(np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32), training=False).numpy()
    assert y.shape == (2, 10)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)


def test_parameter_count_matches_the_keras_resnet20_v1():
    trainable, total = count_params(resnet_v1())
    assert trainable == TRAINABLE_PARAMS == 273_066
    assert total == TOTAL_PARAMS == 274_442
    # the PyTorch-style count: drop the 784 conv biases, add BN (gamma, beta) on the two projections (192)
    assert trainable - 784 + 2 * (32 + 64) == PYTORCH_STYLE_RESNET20


def test_layers_follow_the_reference_layout():
    model = resnet_v1()
    convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert len(convs) == 21 and len(bns) == 19  # 19 3x3 convs with BN, 2 bare 1x1 projections
    assert all(c.use_bias and c.padding == "same" for c in convs)
    assert sorted({c.filters for c in convs}) == [16, 32, 64]
    shortcuts = [c for c in convs if c.kernel_size == (1, 1)]
    assert [(c.filters, c.strides) for c in shortcuts] == [(32, (2, 2)), (64, (2, 2))]
    assert all(abs(float(c.kernel_regularizer.l2) - 1e-4) < 1e-9 for c in convs)
    pool = [l for l in model.layers if isinstance(l, keras.layers.AveragePooling2D)]
    assert len(pool) == 1 and pool[0].pool_size == (8, 8)
    assert model.layers[-1].get_config()["activation"] == "softmax"
