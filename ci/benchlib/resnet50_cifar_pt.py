"""Bench pieces for resnet50_cifar_pt: the bare training step of the recipe, counted FLOPs, its input pipeline.

The model, optimiser, mixed-precision choice, memory format and loaders come from the recipe's own
``tools/train.py`` steps (setup, create_model, create_data, create_optimizer), so the bare loop is the recipe's
step (the runner's ``train_step`` and mmcv's optimiser hook) without the input pipeline and the other hooks.
"""
from __future__ import annotations

import contextlib
import importlib.util
from types import SimpleNamespace

from ci.benchlib import ROOT, emit, recipe_args, timed_windows

CONFIG = ROOT / "resnet50_cifar_pt" / "configs" / "resnet" / "resnet50_8xb16_cifar100.py"


def _train_entry():
    """tools/train.py as a module (it is a script, not part of a package)."""
    spec = importlib.util.spec_from_file_location("r50_train", ROOT / "resnet50_cifar_pt" / "tools" / "train.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _optimizer_hook(optim):
    """The hook that makes the optimiser step, built as mmcv's register_training_hooks builds it."""
    from mmcv import build_from_cfg
    from mmcv.runner import HOOKS, Hook
    return optim.hook if isinstance(optim.hook, Hook) else build_from_cfg(dict(type="OptimizerHook", **optim.hook),
                                                                         HOOKS)


def main() -> None:
    args = recipe_args("resnet50_cifar_pt", 16)

    import torch
    import mmcls
    from ci.benchlib import torch_util

    # before any pipeline or model exists (ci/benchlib/__init__.py: why)
    matmul = torch_util.matmul_rate()

    train = _train_entry()
    bs = args.batch_size
    targs = train.parse_args([str(CONFIG), "--device", "cpu", "--seed", "0", "--data-path", str(args.data),
                              "--no-validate", "--cfg-options", f"data.samples_per_gpu={bs}"])
    ctx = train.setup(targs)
    model = train.create_model(targs, ctx)
    data = train.create_data(targs, ctx)
    model, optim = train.create_optimizer(targs, ctx, model)
    model.train()
    hook = _optimizer_hook(optim)
    autocast = optim.autocast or contextlib.nullcontext
    batch = dict(img=torch.randn(bs, 3, 32, 32), gt_label=torch.randint(0, 100, (bs,)))

    def step():
        with autocast():  # the runner's run_iter
            outputs = model.train_step(batch, optim.optimizer)
        hook.after_train_iter(SimpleNamespace(model=model, optimizer=optim.optimizer, outputs=outputs))

    windows = 3 if args.quick else 5
    bare = timed_windows(step, bs, warmup=3, windows=windows, steps_per_window=4 if args.quick else 8)

    def loss_one():
        losses = model(img=batch["img"][:1], gt_label=batch["gt_label"][:1], return_loss=True)
        return sum(v for v in losses.values() if torch.is_tensor(v))
    flops = torch_util.train_step_flops(model, loss_one)

    # the recipe's input pipeline alone: its dataset class, train pipeline and DataLoader settings
    loader = data.train_loader
    it = iter(loader)

    def next_batch():
        nonlocal it
        try:
            next(it)
        except StopIteration:
            it = iter(loader)
            next(it)
    pipe = timed_windows(next_batch, bs, warmup=2, windows=windows, steps_per_window=10)

    emit({"recipe": "resnet50_cifar_pt", "framework": "torch", "framework_version": f"{torch.__version__} "
          f"(mmcls {mmcls.__version__})", "batch_size": bs, "bare": bare, "pipeline": pipe,
          "flops_per_image_train": flops, "flops_method": "torch.utils.flop_counter.FlopCounterMode over one "
          "forward + backward at batch 1 (convolutions and matmuls; elementwise ops not counted)",
          "matmul_flops_per_sec": matmul, "threads": torch_util.threads(), "memory_format": ctx.memory_format})


if __name__ == "__main__":
    main()
