"""Bench pieces for sppnet_ms (ZFNet): bare graph-mode TrainOneStepCell loop, counted FLOPs, data pipeline."""
from __future__ import annotations


import numpy as np

from ci.benchlib import emit, recipe_args



def main() -> None:
    args = recipe_args("sppnet_ms", 16, train_model=(str, "zfnet"))

    import mindspore as ms
    from mindspore import nn
    from src.sppnet import SppNet
    from src.dataset import create_dataset_imagenet, load_split
    from ci.benchlib import ms_util

    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    ms.set_seed(44)
    bs, size = args.batch_size, 224
    # before any pipeline or model exists (ci/benchlib/__init__.py: why)
    matmul = ms_util.matmul_rate()
    net = SppNet(1000, "train", True, args.train_model, size)
    flops = 3 * ms_util.forward_flops(net, ms.Tensor(np.zeros((1, 3, size, size), np.float32)))
    loss = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
    opt = nn.Momentum(net.trainable_params(), learning_rate=0.01, momentum=0.9, weight_decay=1e-4)
    samples, _ = load_split(args.data, "train", vet=False)
    bare, pipe, op_time = ms_util.bare_and_pipeline(
        net, loss, opt, bs, size, lambda: create_dataset_imagenet(samples, bs, args.train_model, True, size),
        args.quick, 3)

    emit({"recipe": "sppnet_ms", "framework": "mindspore", "framework_version": ms.__version__, "batch_size": bs,
          "train_model": args.train_model, "image_size": size, "bare": bare, "pipeline": pipe, "op_time": op_time,
          "flops_per_image_train": flops, "flops_method": ms_util.__doc__.split("\n\n")[1].replace("\n", " "),
          "matmul_flops_per_sec": matmul, "threads": {"ms_workers": "framework default"},
          "notes": "ZFNet at batch 16 instead of the recipe's 256 on this 2-core CPU, to keep the run short"})


if __name__ == "__main__":
    main()
