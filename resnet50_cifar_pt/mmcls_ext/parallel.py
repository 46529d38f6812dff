"""Model wrapping for mmcv's runner, which calls ``model.train_step(data, optimizer)``.

One process: mmcls' own wrappers (the bare model on CPU, MMDataParallel on CUDA, NPUDataParallel on
NPU). Several processes: on NPU mmcv's NPU DDP; on CPU and CUDA torch's DistributedDataParallel with a
``train_step`` that goes through DDP's forward (so gradients are all-reduced), because mmcv's
MMDistributedDataParallel assumes CUDA and relies on DDP internals of older torch releases.
"""
from __future__ import annotations

import torch
from mmcls.utils import wrap_distributed_model, wrap_non_distributed_model
from mmcv.parallel import scatter_kwargs
from torch.nn.parallel import DistributedDataParallel

from common.digest import weights_digest


class StepDDP(DistributedDataParallel):
    def _move(self, data):
        target = self.device_ids[0] if self.device_ids else -1
        _, kwargs = scatter_kwargs((), data, [target], dim=self.dim)
        return kwargs[0]

    def train_step(self, data, optimizer=None, **kwargs):
        data = self._move(data)
        losses = self(**data)
        loss, log_vars = self.module._parse_losses(losses)
        return dict(loss=loss, log_vars=log_vars, num_samples=len(data["img"]))


def wrap_model(model, device: str, distributed: bool, local_index: int = 0):
    if not distributed:
        return wrap_non_distributed_model(model, device, device_ids=[local_index])
    if device == "npu":
        return wrap_distributed_model(model, "npu", broadcast_buffers=False)
    if device == "cuda":
        return StepDDP(model.cuda(local_index), device_ids=[local_index], broadcast_buffers=False)
    return StepDDP(model.cpu(), broadcast_buffers=False)


def unwrap(model):
    return model.module if hasattr(model, "module") else model


def param_digest(model) -> str:
    """``common.digest.weights_digest`` of every parameter, in module order (the same on every rank when
    data parallelism is right, and for the same seed on 1 device and N)."""
    with torch.no_grad():
        return weights_digest(p.detach().float().cpu().numpy() for p in unwrap(model).parameters())
