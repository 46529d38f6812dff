"""Architecture: parameter counts against the original, SPP bins, LRN semantics, output shapes."""
import math

import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor, ops

from src.config import get_config
from src.spatial_pyramid_pooling import SpatialPyramidPooling, axis_bins, axis_plan
from src.sppnet import LRN, SppNet, count_params, feature_side, min_image_size

ms.set_context(mode=ms.GRAPH_MODE)
ms.set_device('CPU')


# sppnet_mult is the same network as sppnet_single (only training differs), so it is not built twice
@pytest.mark.parametrize('model,expected', [('zfnet', 62.36e6), ('sppnet_single', 77.04e6)])
def test_param_count_matches_original_within_half_percent(model, expected):
    n = count_params(SppNet(1000, train_model=model))
    assert abs(n - expected) / expected < 0.005, n


def test_num_classes_is_honoured():
    assert tuple(SppNet(10, train_model='zfnet', image_size=56).fc3.weight.shape) == (10, 4096)


def test_feature_sides_of_the_original_sizes():
    assert feature_side(224) == 13 and feature_side(180) == 10


def test_spp_bins_reproduce_the_original_cases():
    # window ceil(a/n), stride floor(a/n) at 13 and 10; the hand-written a=10, n=6 case: pad 1, 2x2 stride 2
    assert [axis_plan(13, n) for n in (6, 3, 2)] == [('pool', 3, 2, 0, 0), ('pool', 5, 4, 0, 0), ('pool', 7, 6, 0, 0)]
    assert [axis_plan(10, n) for n in (6, 3, 2)] == [('pool', 2, 2, 1, 1), ('pool', 4, 3, 0, 0), ('pool', 5, 5, 0, 0)]
    assert axis_plan(8, 6)[0] == 'adaptive'  # neither rule gives 6 bins without an all-padding bin


@pytest.mark.parametrize('side', list(range(1, 40)))
def test_every_bin_covers_real_pixels(side):
    for n in (6, 3, 2):
        bins = axis_bins(side, n)
        assert len(bins) == n
        assert all(0 <= a < b <= side for a, b in bins)
        assert bins[0][0] == 0 and bins[-1][1] == side


def _numpy_spp(x, levels=(6, 3, 2, 1)):
    out = []
    for n in levels:
        rows, cols = axis_bins(x.shape[2], n), axis_bins(x.shape[3], n)
        lvl = np.stack([np.stack([x[:, :, r0:r1, c0:c1].max(axis=(2, 3)) for c0, c1 in cols], -1)
                        for r0, r1 in rows], -2)
        out.append(lvl.reshape(x.shape[0], -1))
    return np.concatenate(out, 1)


@pytest.mark.parametrize('h,w', [(13, 13), (10, 10), (8, 8), (3, 3), (7, 12), (1, 1)])
def test_spp_layer_equals_bin_maxima_and_has_fixed_length(h, w):
    x = np.random.default_rng(h * 100 + w).random((2, 4, h, w)).astype(np.float32)
    y = SpatialPyramidPooling()(Tensor(x)).asnumpy()
    assert y.shape == (2, 4 * 50)
    np.testing.assert_array_equal(y, _numpy_spp(x))


def test_sppnet_gives_12800_features_for_224_180_and_odd_sizes():
    feats = SppNet(10, 'test', False, 'sppnet_single')
    for size in (224, 180, 97, 21):
        x = Tensor(np.random.default_rng(size).standard_normal((1, 3, size, size)).astype(np.float32))
        assert feats(x).shape == (1, 12800), size
    assert min_image_size('sppnet_single') == 21


def test_sppnet_classifies_an_odd_size():
    net = SppNet(10, 'test', True, 'sppnet_mult', 97)
    net.set_train(False)
    assert net(Tensor(np.zeros((2, 3, 97, 97), np.float32))).shape == (2, 10)


def test_zfnet_flattens_9216_at_224_and_rejects_too_small_inputs():
    net = SppNet(10, 'test', False, 'zfnet', 224)
    assert net(Tensor(np.zeros((1, 3, 224, 224), np.float32))).shape == (1, 9216)
    assert min_image_size('zfnet') == 53
    with pytest.raises(ValueError, match='at least 53'):
        SppNet(10, train_model='zfnet', image_size=52)


def test_lrn_primitives_equal_mindspore_lrn_defaults():
    x = np.random.default_rng(0).standard_normal((2, 96, 5, 5)).astype(np.float32) * 3
    ours = LRN(96)(Tensor(x)).asnumpy()
    native = ops.LRN()(Tensor(x)).asnumpy()  # depth_radius 5, bias 1, alpha 1, beta 0.5
    np.testing.assert_allclose(ours, native, rtol=1e-5, atol=1e-6)
    sq = np.pad(x ** 2, ((0, 0), (5, 5), (0, 0), (0, 0)))
    window = sum(sq[:, i:i + 96] for i in range(11))
    np.testing.assert_allclose(ours, x / np.sqrt(1 + window), rtol=1e-5, atol=1e-6)


def test_lrn_gradient_equals_mindspore_lrns():
    # beta 0.5 runs as Sqrt and a division instead of Pow: same function, and the gradient must be the same too
    import mindspore as ms
    rng = np.random.default_rng(1)
    x = Tensor(rng.standard_normal((2, 96, 4, 4)).astype(np.float32) * 3)
    w = Tensor(rng.standard_normal((2, 96, 4, 4)).astype(np.float32))
    ours, native, pow_form = LRN(96), ops.LRN(), LRN(96, beta=0.5000001)  # pow_form: the general Pow path

    def grad_of(cell):
        def loss(t):
            return (cell(t) * w).sum()
        return ms.grad(loss)(x).asnumpy()
    g_ours = grad_of(ours)
    np.testing.assert_allclose(g_ours, grad_of(native), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grad_of(pow_form), g_ours, rtol=1e-4, atol=1e-5)


def test_test_phase_has_no_dropout_and_train_phase_uses_model_keep_prob():
    assert not SppNet(10, 'test', train_model='zfnet', image_size=56).use_dropout
    net = SppNet(10, 'train', train_model='zfnet', image_size=56)
    assert net.use_dropout and math.isclose(net.dropout.p, 0.35, rel_tol=1e-6)
    keeps = [get_config(m).keep_prob for m in ('zfnet', 'sppnet_single', 'sppnet_mult')]
    assert keeps == [0.65, 0.59, 0.58]


def test_convolutions_never_run_on_onednns_reference_kernel(tmp_path):
    # on AVX-512 CPUs oneDNN ran MindSpore's NCHW convolutions as "jit_uni_ncsp:conv+ref:any" (~1 GFLOP/s)
    # until src/__init__.py capped its ISA at AVX2; the implementation of every convolution is in its log
    from pathlib import Path
    from common.onednn import mindspore_conv_implementations
    impls = mindspore_conv_implementations(Path(__file__).resolve().parents[1], tmp_path)
    assert len(impls) >= 3, impls  # forward, input gradient, weight gradient
    assert not [i for i in impls if "ref" in i], impls


def test_onednn_probe_child_times_all_three_convolutions_under_the_level_it_is_given():
    # common/onednn.py decides the ISA cap from this child's timings: it must run the forward pass and both
    # gradients under the level set in its environment, and report a time
    import os
    import subprocess
    import sys
    from common import cputune, onednn
    env = {k: v for k, v in os.environ.items() if k not in onednn.ISA_VARIABLES}
    proc = subprocess.run([sys.executable, str(onednn.TIMED_PROBE)], capture_output=True, text=True, timeout=300,
                          env={**env, "ONEDNN_MAX_CPU_ISA": "AVX2", "ONEDNN_VERBOSE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    fields = [f + [""] * 8 for f in (line.split(",") for line in proc.stdout.splitlines()) if f[0] == "onednn_verbose"]
    assert [f[4] for f in fields if f[2] == "info" and f[4].startswith("isa:")] == ["isa:Intel AVX2"]
    convs = {f[7] for f in fields if f[3:6] == ["exec", "cpu", "convolution"]}
    assert convs == {"forward_training", "backward_data", "backward_weights"}, convs
    (seconds,) = [float(line.split()[1]) for line in proc.stdout.splitlines() if line.startswith(cputune.PROBE_RESULT)]
    assert 0 < seconds < 60
