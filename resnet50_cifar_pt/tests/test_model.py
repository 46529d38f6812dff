"""Architecture: parameter count and output shape against the reference, every shipped config loads."""
from __future__ import annotations

import pytest
import torch
from mmcv import Config
from mmcls.models import build_classifier

from conftest import CONFIGS

REFERENCE_PARAMS = 23_705_252  # mmcls ResNet_CIFAR depth 50 + LinearClsHead(2048 -> 100); "23.71 M" in the model zoo


@pytest.fixture(scope="module")
def model():
    cfg = Config.fromfile(str(CONFIGS / "resnet50_8xb16_cifar100.py"))
    m = build_classifier(cfg.model)
    m.init_weights()
    return m.eval()


def test_trainable_parameter_count_matches_reference(model):
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert abs(n - REFERENCE_PARAMS) / REFERENCE_PARAMS < 0.005
    assert n == REFERENCE_PARAMS


def test_cifar_stem_keeps_resolution_and_head_gives_100_classes(model):
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feat = model.backbone(x)[-1]
        probs = model.simple_test(x, post_process=False)
    assert feat.shape == (2, 2048, 4, 4)  # no max-pool: 32 -> 32 -> 16 -> 8 -> 4
    assert probs.shape == (2, 100)
    assert torch.allclose(probs.sum(1), torch.ones(2), atol=1e-5)


def test_zero_init_residual_and_head_init(model):
    last_bns = [blk.norm3 for layer in (model.backbone.layer1, model.backbone.layer4) for blk in layer]
    assert all(float(bn.weight.detach().abs().sum()) == 0.0 for bn in last_bns)
    assert 0.005 < float(model.head.fc.weight.detach().std()) < 0.015  # Normal(std=0.01)


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.py")))
def test_every_config_loads_and_builds(name):
    cfg = Config.fromfile(str(CONFIGS / name))
    assert cfg.data.train.type == "CIFAR100Local"
    assert cfg.model.head.num_classes == 100
    assert cfg.runner.max_epochs == (2 if name.endswith("_perf.py") else 200)
    build_classifier(cfg.model)


def test_schedules_follow_the_original():
    base = Config.fromfile(str(CONFIGS / "resnet50_8xb16_cifar100.py"))
    assert base.optimizer == dict(type="SGD", lr=0.1, momentum=0.9, weight_decay=0.0005)
    assert base.lr_config == dict(policy="step", step=[60, 120, 160], gamma=0.2)
    assert base.data.samples_per_gpu == 512 and base.data.workers_per_gpu == 2
    cos = Config.fromfile(str(CONFIGS / "resnet50_8xb16_cifar100_cos.py"))
    assert cos.lr_config == dict(policy="CosineAnnealing", min_lr=0)
    big = Config.fromfile(str(CONFIGS / "resnet50_8xb256_cifar100.py"))
    assert big.optimizer.lr == pytest.approx(1.6)
    assert big.lr_config.warmup_iters == 20 and big.lr_config.warmup_by_epoch


# -- --memory-format -----------------------------------------------------------------------------------------
def test_memory_format_auto_is_the_original_on_accelerators_and_explicit_choices_are_kept():
    from common import cputune
    from mmcls_ext.tuning import choose_memory_format
    cfg = Config.fromfile(str(CONFIGS / "resnet50_8xb16_cifar100.py")).model
    for device in ("cuda", "npu"):
        assert choose_memory_format("auto", device, cfg) == "contiguous"
        assert cputune.decisions()["memory_format"].how == "rule"
    assert choose_memory_format("channels_last", "cuda", cfg) == "channels_last"
    assert cputune.decisions()["memory_format"].how == "user"
    with pytest.raises(ValueError, match="memory-format"):
        choose_memory_format("nhwc", "cpu", cfg)


def test_memory_format_auto_on_cpu_takes_what_a_timed_step_measured_and_leaves_the_seed_alone(monkeypatch,
                                                                                                   tmp_path):
    import time
    from mmcls_ext import tuning
    cfg = Config.fromfile(str(CONFIGS / "resnet50_8xb16_cifar100.py")).model
    real = tuning._training_step
    for run, fast in enumerate(("channels_last", "contiguous")):
        monkeypatch.setenv("MODELZOO_TUNE_CACHE", str(tmp_path / str(run)))

        def step(model_cfg, fmt, stack, batch, fast=fast):
            real(model_cfg, fmt, stack, 2)()  # the real model and step draw from the generator; a delay decides
            return lambda: time.sleep(0.01 if fmt == fast else 0.1)
        monkeypatch.setattr(tuning, "_training_step", step)
        torch.manual_seed(123)
        expected = torch.rand(3)
        torch.manual_seed(123)
        assert tuning.choose_memory_format("auto", "cpu", cfg) == fast
        assert torch.equal(torch.rand(3), expected)  # the probe's draws did not move the run's generator


def test_memory_format_probe_times_the_runs_batch_up_to_16(monkeypatch, tmp_path):
    from mmcls_ext import tuning
    cfg = Config.fromfile(str(CONFIGS / "resnet50_8xb16_cifar100.py")).model
    timed = []
    monkeypatch.setenv("MODELZOO_TUNE_CACHE", str(tmp_path))
    monkeypatch.setattr(tuning, "_training_step", lambda model_cfg, fmt, stack, batch: timed.append(batch) or (
        lambda: None))
    for batch in (4, 16, 64):
        tuning.choose_memory_format("auto", "cpu", cfg, batch)
    assert sorted(set(timed)) == [4, 16]  # 64 is timed at 16, each size cached under its own key
    assert len(list(tmp_path.glob("memory_format-*.json"))) == 2


def test_channels_last_model_computes_what_the_contiguous_one_does():
    from mmcls_ext.tuning import apply_memory_format
    cfg = Config.fromfile(str(CONFIGS / "resnet50_8xb16_cifar100.py")).model
    torch.manual_seed(0)
    nchw = build_classifier(cfg)
    nchw.init_weights()
    nhwc = build_classifier(cfg)
    nhwc.load_state_dict(nchw.state_dict())
    nhwc = apply_memory_format(nhwc, "channels_last")
    seen = []
    nhwc.backbone.conv1.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    assert nhwc.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    losses = [m._parse_losses(m(img=x, gt_label=y, return_loss=True))[0] for m in (nchw.train(), nhwc.train())]
    assert seen and seen[0].is_contiguous(memory_format=torch.channels_last) and not seen[0].is_contiguous()
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-4, atol=1e-5)
    for loss in losses:
        loss.backward()
    for (name, a), b in zip(nchw.named_parameters(), nhwc.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-3, atol=1e-4, msg=name)
