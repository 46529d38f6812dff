"""Bench pieces for resnet50_cifar_pt: bare SGD step loop of the mmcls model, counted FLOPs, pipeline."""
from __future__ import annotations

from pathlib import Path

from ci.benchlib import emit, recipe_args, timed_windows



def main() -> None:
    args = recipe_args("resnet50_cifar_pt", 16)

    import torch
    import mmcls
    from mmcv import Config
    from mmcls.datasets import build_dataset, build_dataloader
    from mmcls.models import build_classifier
    import mmcls_ext  # noqa: F401  registers CIFAR100Local
    from ci.benchlib import torch_util

    # before any pipeline or model exists (ci/benchlib/__init__.py: why)
    matmul = torch_util.matmul_rate()

    from ci.benchlib import ROOT
    cfg = Config.fromfile(str(ROOT / "resnet50_cifar_pt" / "configs" / "resnet" / "resnet50_8xb16_cifar100.py"))
    torch.manual_seed(0)
    model = build_classifier(cfg.model)
    model.init_weights()
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    bs = args.batch_size
    x = torch.randn(bs, 3, 32, 32)
    y = torch.randint(0, 100, (bs,))

    def step():
        losses = model(img=x, gt_label=y, return_loss=True)
        loss = sum(v for v in losses.values() if torch.is_tensor(v))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    windows = 3 if args.quick else 5
    bare = timed_windows(step, bs, warmup=3, windows=windows, steps_per_window=4 if args.quick else 8)

    def loss_one():
        losses = model(img=x[:1], gt_label=y[:1], return_loss=True)
        return sum(v for v in losses.values() if torch.is_tensor(v))
    flops = torch_util.train_step_flops(model, loss_one)

    # the recipe's input pipeline alone: its dataset class, train pipeline and DataLoader settings
    data_cfg = cfg.data.train.copy()
    data_cfg["data_prefix"] = str(Path(args.data))
    dataset = build_dataset(data_cfg)
    loader = build_dataloader(dataset, samples_per_gpu=bs, workers_per_gpu=cfg.data.workers_per_gpu,
                              num_gpus=1, dist=False, shuffle=True, round_up=True, seed=0, persistent_workers=True)
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
          "matmul_flops_per_sec": matmul, "threads": torch_util.threads()})


if __name__ == "__main__":
    main()
