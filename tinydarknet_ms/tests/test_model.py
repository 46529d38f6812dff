"""Architecture, loss, schedules and config: the pieces that must match the original exactly."""
import re

import numpy as np
import pytest
import mindspore as ms

from conftest import RECIPE
from src.config import get_config
from src.CrossEntropySmooth import CrossEntropySmooth
from src.lr_scheduler import warmup_cosine_annealing_lr, warmup_step_lr, step_lr
from src.tinydarknet import TinyDarkNet, count_params, flops_per_image

REFERENCE_PARAMS = 1_036_720 + 6_384  # originals.md 5.2: conv weights + BN affine, 1000 classes


def test_trainable_params_match_reference_within_half_percent():
    n = count_params(TinyDarkNet(1000))
    assert abs(n - REFERENCE_PARAMS) / REFERENCE_PARAMS < 0.005, n
    assert n == 1_043_104


def test_num_classes_is_honoured():
    # the original always built 1000 outputs; the last conv is now num_classes wide
    assert count_params(TinyDarkNet(10)) == REFERENCE_PARAMS - 128 * 990 - 2 * 990


@pytest.mark.parametrize("size,classes", [(224, 1000), (32, 10)])
def test_output_shape(size, classes):
    net = TinyDarkNet(classes)
    net.set_train(False)
    out = net(ms.Tensor(np.random.rand(2, 3, size, size).astype(np.float32)))
    assert out.shape == (2, classes)


def test_parameter_names_match_the_original_checkpoints():
    names = [p.name for p in TinyDarkNet(1000).get_parameters()]
    assert names[:5] == ["conv1.conv.weight", "conv1.bn.moving_mean", "conv1.bn.moving_variance",
                         "conv1.bn.gamma", "conv1.bn.beta"]
    assert "conv16.conv.weight" in names and len([n for n in names if n.endswith("conv.weight")]) == 16


def test_layers_use_bn_eps_1e3_and_leaky_02():
    net = TinyDarkNet(1000)
    assert net.conv7.bn.eps == pytest.approx(1e-3)
    assert net.conv7.bn.momentum == pytest.approx(0.1)  # MindSpore keeps 1 - momentum: 0.9 as the original
    assert TinyDarkNet(10, leaky="max").conv7.leakyrelu.alpha == pytest.approx(0.2)  # the original's cell
    assert net.conv1.conv.has_bias is False and net.conv12.conv.kernel_size == (3, 3)
    with pytest.raises(ValueError, match="leaky"):
        TinyDarkNet(10, leaky="relu")


def test_relu_mix_leaky_is_the_originals_function_and_gradient():
    from src.tinydarknet import ReluMixLeaky
    x = ms.Tensor(np.random.default_rng(0).normal(0, 3, (4, 8, 5, 5)).astype(np.float32))
    mix, original = ReluMixLeaky(), ms.nn.LeakyReLU(alpha=0.2)
    np.testing.assert_allclose(mix(x).asnumpy(), original(x).asnumpy(), rtol=1e-6, atol=1e-7)
    g_mix = ms.grad(lambda t: (mix(t) * t).sum())(x).asnumpy()
    g_original = ms.grad(lambda t: (original(t) * t).sum())(x).asnumpy()
    np.testing.assert_allclose(g_mix, g_original, rtol=1e-6, atol=1e-6)


def test_leaky_relu_auto_is_the_original_on_accelerators():
    from src.utils import resolve_leaky
    # the mix form was measured on CPU only: Ascend and GPU get the original's nn.LeakyReLU
    assert [resolve_leaky("auto", d) for d in ("Ascend", "GPU", "CPU")] == ["max", "max", "mix"]
    assert [resolve_leaky(c, "Ascend") for c in ("mix", "max")] == ["mix", "max"]
    assert isinstance(TinyDarkNet(10, leaky=resolve_leaky("auto", "GPU")).conv7.leakyrelu, ms.nn.LeakyReLU)


def test_flops_at_224_is_about_one_gflop():
    assert flops_per_image(224, 1000) == pytest.approx(0.983e9, rel=1e-3)


def test_label_smoothing_matches_closed_form():
    logits = np.random.default_rng(0).normal(size=(4, 10)).astype(np.float32)
    labels = np.array([0, 3, 9, 3], np.int32)
    got = float(CrossEntropySmooth(True, "mean", 0.1, 10)(ms.Tensor(logits), ms.Tensor(labels)).asnumpy())
    target = np.full((4, 10), 0.1 / 9)
    target[np.arange(4), labels] = 0.9
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    assert got == pytest.approx(float(-(target * logp).sum(1).mean()), rel=1e-5)


class TestSchedules:
    def test_exponential_is_multi_step_x03_at_70_140_210_280(self):
        lr = warmup_step_lr(0.1, [70, 140, 210, 280], 2, 0, 500, gamma=0.3)
        assert len(lr) == 1000
        for epoch, want in [(0, 0.1), (69, 0.1), (70, 0.03), (140, 0.009), (210, 0.0027), (280, 0.00081),
                            (499, 0.00081)]:
            assert lr[epoch * 2] == pytest.approx(want, rel=1e-5), epoch

    def test_warmup_lr_increases_linearly_to_peak(self):
        lr = warmup_step_lr(0.1, [4], 10, 2, 5)
        assert lr[0] == pytest.approx(0.005) and lr[19] == pytest.approx(0.1)
        assert np.all(np.diff(lr[:20]) > 0) and lr[40] == pytest.approx(0.01)

    def test_cosine_follows_t_max_and_is_not_clipped(self):
        lr = warmup_cosine_annealing_lr(0.1, 1, 0, 500, 150, 0.0)
        assert lr[0] == pytest.approx(0.1) and lr[75] == pytest.approx(0.05, rel=1e-4)
        assert lr[150] == pytest.approx(0.0, abs=1e-7) and lr[300] == pytest.approx(0.1)

    def test_step_lr_decays_every_n_epochs(self):
        lr = step_lr(1.0, 2, 1, 6, gamma=0.5)
        assert list(lr) == pytest.approx([1, 1, 0.5, 0.5, 0.25, 0.25])


class TestConfig:
    def test_every_shipped_yaml_loads(self):
        files = sorted((RECIPE / "config").glob("*.yaml"))
        assert files
        for f in files:
            cfg = get_config([f"--config_path={f}"])
            assert cfg.momentum == pytest.approx(0.9) and cfg.lr_scheduler in ("exponential", "cosine_annealing")

    def test_defaults_are_the_original_values(self):
        c = get_config([])
        assert (c.lr_init, c.batch_size, c.epoch_size, c.weight_decay, c.loss_scale) == (0.1, 128, 500, 1e-4, 1024)
        assert (c.lr_epochs, c.lr_gamma, c.T_max, c.keep_checkpoint_max) == ([70, 140, 210, 280], 0.3, 150, 1)
        assert c.label_smooth_factor == 0.1 and c.image_size == 224 and c.num_classes == 1000

    def test_command_line_beats_config_file(self):
        assert get_config(["--batch_size=7", "--lr_epochs=1,2"]).batch_size == 7
        assert get_config(["--lr_epochs=1,2"]).lr_epochs == [1, 2]

    def test_unknown_config_key_is_rejected_with_file_name(self, tmp_path, capsys):
        bad = tmp_path / "bad.yaml"
        bad.write_text("batch_size: 8\nbatchsize: 9\n")
        with pytest.raises(SystemExit) as exc:
            get_config([f"--config_path={bad}"])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(bad) in err and "batchsize" in err

    def test_perf_is_a_command_line_flag_not_a_config_key(self, tmp_path, capsys):
        assert get_config(["--perf"]).perf and not get_config(["--train_steps=5"]).perf
        bad = tmp_path / "perf.yaml"
        bad.write_text("perf: True\n")
        with pytest.raises(SystemExit) as exc:
            get_config([f"--config_path={bad}"])
        assert exc.value.code == 2 and "'perf' is a command-line flag" in capsys.readouterr().err

    def test_readme_flag_table_matches_the_parser(self):
        from src.config import KEYS, TRAIN_FLAGS
        text = (RECIPE / "README.md").read_text()
        table = text.split("## Configuration and flags", 1)[1].split("\n## ", 1)[0]
        documented = set(re.findall(r"^\| `--(\w+)` \|", table, flags=re.M))
        assert documented == set(KEYS) | set(TRAIN_FLAGS) | {"config_path"}


def test_convolutions_never_run_on_onednns_reference_kernel(tmp_path):
    # on AVX-512 CPUs oneDNN ran MindSpore's NCHW convolutions as "jit_uni_ncsp:conv+ref:any" (~1 GFLOP/s)
    # until src/__init__.py capped its ISA at AVX2; the implementation of every convolution is in its log
    from pathlib import Path
    from common.onednn import mindspore_conv_implementations
    impls = mindspore_conv_implementations(Path(__file__).resolve().parents[1], tmp_path)
    assert len(impls) >= 3, impls  # forward, input gradient, weight gradient
    assert not [i for i in impls if "ref" in i], impls
