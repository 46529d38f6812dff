"""Bench pieces for sppnet_ms (ZFNet): the recipe's own train step in a bare graph-mode loop, counted FLOPs,
data pipeline.

The network, loss, optimiser (two parameter groups, warm-up + cosine LR, loss scale) and the ``Model`` train
step (AMP level, fixed loss scale 1024) come from the recipe's ``create_*`` functions, so the bare loop is
train.py's step without its input pipeline and callbacks.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from ci.benchlib import emit, recipe_args


def main() -> None:
    args = recipe_args("sppnet_ms", 16, train_model=(str, "zfnet"))

    import mindspore as ms
    import train as recipe  # sppnet_ms/train.py (recipe_args put sppnet_ms/ on sys.path)
    from src.dataset import create_dataset_imagenet, load_split
    from src.training import RunContext
    from ci.benchlib import ms_util

    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    bs, size = args.batch_size, 224
    # before any pipeline or model exists (ci/benchlib/__init__.py: why)
    matmul, uncapped = ms_util.matmul_rate(), ms_util.uncapped_matmul_rate()
    rargs = recipe.parse_args([f"--train_model={args.train_model}", f"--train_path={args.data}",
                               f"--batch_size={bs}", f"--image_size={size}", "--num_classes=1000",
                               "--device_target=CPU"])
    ctx = RunContext(target="CPU", amp_level="O0", sink=False, out_dir=None)  # out_dir None: no events
    ms.set_seed(rargs.cfg.seed)
    net = recipe.create_model(rargs, ctx)
    flops = 3 * ms_util.forward_flops(net, ms.Tensor(np.zeros((1, 3, size, size), np.float32)))
    samples, _ = load_split(args.data, "train", vet=False)
    loss = recipe.create_loss(rargs)
    opt = recipe.create_optimizer(rargs, net, SimpleNamespace(steps_per_epoch=max(1, len(samples) // bs)))
    step = recipe.create_trainer(rargs, ctx, net, loss, opt).train_network
    bare, pipe, op_time = ms_util.bare_and_pipeline(
        net, loss, opt, bs, size, lambda: create_dataset_imagenet(samples, bs, args.train_model, True, size),
        args.quick, 3, step_cell=step)

    emit({"recipe": "sppnet_ms", "framework": "mindspore", "framework_version": ms.__version__, "batch_size": bs,
          "train_model": args.train_model, "image_size": size, "bare": bare, "pipeline": pipe, "op_time": op_time,
          "flops_per_image_train": flops, "flops_method": ms_util.__doc__.split("\n\n")[1].replace("\n", " "),
          "matmul_flops_per_sec": matmul, "matmul_flops_per_sec_uncapped": uncapped,
          "threads": {"ms_workers": "framework default"},
          "notes": "ZFNet at batch 16 instead of the recipe's 256 on this 2-core CPU, to keep the run short; "
                   "the bare loop is the recipe's Model train step (create_model/create_loss/create_optimizer/"
                   "create_trainer)"})


if __name__ == "__main__":
    main()
