"""Memory format of the network (--memory-format): NCHW as the original, or channels-last, chosen by a probe.

Channels-last (NHWC) lets oneDNN and cuDNN run convolutions without layout conversions on many CPUs and
GPUs, but not on all: on a 2-core AMD EPYC and an Intel Xeon with AMX the same eager ResNet differed in
opposite directions. So ``auto`` on CPU times a training step of this recipe's own network (fresh weights,
a fixed batch, SGD) in both formats on this host (common/cputune.py: cached per host and thread count,
printed in the ``cpu tuning:`` line, written to the run record) and keeps NCHW unless channels-last is
measurably faster; on CUDA and NPU ``auto`` is the original's NCHW (nothing was measured there) and
``channels_last`` is an explicit opt-in.
"""
from __future__ import annotations

import copy

import torch

from common import cputune

FORMATS = ("auto", "contiguous", "channels_last")


def _training_step(model_cfg, fmt, stack, batch):
    from mmcls.models import build_classifier
    model = build_classifier(copy.deepcopy(model_cfg))
    model.init_weights()
    model.train()
    x = torch.randn(batch, 3, 32, 32)
    y = torch.randint(0, int(model_cfg["head"]["num_classes"]), (batch,))
    if fmt == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        # the loss terms summed here, not by mmcls' _parse_losses: that all-reduces them for its log when a process
        # group exists, and in a multi-rank run only one rank probes (the others wait on the cache's file lock)
        losses = model(img=x, gt_label=y, return_loss=True)
        sum(v.sum() for k, v in losses.items() if "loss" in k).backward()
        opt.step()
    return step


# The probe times the run's per-device batch, at most this many images (a probe step of ResNet-50 at batch 16
# takes ~0.6 s on 2 cores). The batch matters: on a 2-core Intel Xeon with AMX, channels-last was 7.5-9% faster
# at batch 8 (under the 10% margin) and 13-16% at batch 16, the recipe's batch; the full perf run at 16 confirmed
# 11%.
PROBE_BATCH_MAX = 16


def choose_memory_format(requested: str, device: str, model_cfg, batch: int = 8) -> str:
    """``contiguous`` or ``channels_last`` for this run of per-device ``batch`` (see the module's docstring)."""
    if requested not in FORMATS:
        raise ValueError(f"--memory-format must be one of {FORMATS}, got {requested!r}")
    if requested != "auto":
        return cputune.record("memory_format", requested, "user", note="--memory-format").choice
    if device != "cpu":
        return cputune.record("memory_format", "contiguous", "rule", note=f"the original's on {device}").choice
    # the probe's models and batch draw from torch's global generator: keep the run's seeded stream untouched
    batch = max(1, min(int(batch), PROBE_BATCH_MAX))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return cputune.probe_steps(
            "memory_format", ["contiguous", "channels_last"],
            lambda fmt, stack: _training_step(model_cfg, fmt, stack, batch), default="contiguous", rounds=3,
            key=f"torch {torch.__version__}; threads {torch.get_num_threads()}; {model_cfg['backbone']['type']}"
                f" depth {model_cfg['backbone'].get('depth')}; batch {batch}; v1").choice


def apply_memory_format(model: torch.nn.Module, fmt: str) -> torch.nn.Module:
    """Convert the parameters and make the backbone take its input in ``fmt`` (images arrive as NCHW)."""
    if fmt == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        model.backbone.register_forward_pre_hook(
            lambda _m, args: (args[0].contiguous(memory_format=torch.channels_last), *args[1:]))
    return model
