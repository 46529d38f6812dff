"""Bench pieces for tinydarknet_ms: bare graph-mode train-step loop, counted FLOPs, data pipeline.

The network, loss, optimiser (its parameter groups, LR schedule and loss scale) and the train step come from
the recipe's own ``train.py`` (setup, create_model, create_data, create_loss, create_optimizer, create_trainer)
with the config's defaults: the bare loop is the recipe's step without the input pipeline and callbacks.
"""
from __future__ import annotations

import tempfile

import numpy as np

from ci.benchlib import emit, recipe_args


def main() -> None:
    args = recipe_args("tinydarknet_ms", 32, image_size=(int, 224))

    import mindspore as ms
    import train as recipe  # tinydarknet_ms/train.py (recipe_args put its folder first on sys.path)
    from src.dataset import create_dataset_imagenet
    from ci.benchlib import ms_util

    bs, size = args.batch_size, args.image_size
    with tempfile.TemporaryDirectory(prefix="bench_tinydarknet_") as scratch:  # takes the recipe's events.jsonl
        cfg = recipe.parse_args([f"--data_path={args.data}", f"--batch_size={bs}", f"--image_size={size}",
                                 "--device_target=CPU", "--check_images=False", f"--output_path={scratch}"])
        ctx = recipe.setup(cfg)  # graph mode on CPU, the recipe's seed, leaky_relu and max_pool choices
        # before any pipeline or model exists (ci/benchlib/__init__.py: why)
        matmul, uncapped = ms_util.matmul_rate(), ms_util.uncapped_matmul_rate()
        net = recipe.create_model(cfg, ctx)
        flops = 3 * ms_util.forward_flops(net, ms.Tensor(np.zeros((1, 3, size, size), np.float32)))
        data = recipe.create_data(cfg, ctx)
        loss, opt = recipe.create_loss(cfg), recipe.create_optimizer(cfg, net, data)
        # the recipe's step: Model's train_network (AMP level, loss scale 1024 as the loss's sens and the
        # optimiser's divisor)
        step = recipe.create_trainer(cfg, net, loss, opt, ctx.amp_level).train_network
        bare, pipe, op_time = ms_util.bare_and_pipeline(
            net, loss, opt, bs, size, lambda: create_dataset_imagenet(data.train, True, bs, size), args.quick, 4,
            step_cell=step)

    emit({"recipe": "tinydarknet_ms", "framework": "mindspore", "framework_version": ms.__version__, "batch_size": bs,
          "image_size": size, "bare": bare, "pipeline": pipe, "op_time": op_time, "flops_per_image_train": flops,
          "flops_method": ms_util.__doc__.split("\n\n")[1].replace("\n", " "),
          "matmul_flops_per_sec": matmul, "matmul_flops_per_sec_uncapped": uncapped,
          "threads": {"ms_workers": "framework default"},
          "notes": "batch 32 instead of the recipe's 128 on this 2-core CPU, to keep the run short"})


if __name__ == "__main__":
    main()
