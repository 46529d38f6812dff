"""Bench pieces for tinydarknet_ms: bare graph-mode TrainOneStepCell loop, counted FLOPs, data pipeline."""
from __future__ import annotations


import numpy as np

from ci.benchlib import emit, recipe_args



def main() -> None:
    args = recipe_args("tinydarknet_ms", 32, image_size=(int, 224))

    import mindspore as ms
    from mindspore import nn
    from src.tinydarknet import TinyDarkNet
    from src.CrossEntropySmooth import CrossEntropySmooth
    from src.dataset import create_dataset_imagenet, find_split, load_samples
    from ci.benchlib import ms_util

    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    ms.set_seed(1)
    bs, size = args.batch_size, args.image_size
    # before any pipeline or model exists (ci/benchlib/__init__.py: why)
    matmul = ms_util.matmul_rate()
    net = TinyDarkNet(num_classes=1000)  # leaky="mix", as train.py by default
    flops = 3 * ms_util.forward_flops(net, ms.Tensor(np.zeros((1, 3, size, size), np.float32)))
    loss = CrossEntropySmooth(sparse=True, reduction="mean", smooth_factor=0.1, num_classes=1000)
    opt = nn.Momentum(net.trainable_params(), learning_rate=0.1, momentum=0.9, weight_decay=1e-4)
    samples, _ = load_samples(find_split(args.data, "train"), check=False)
    bare, pipe, op_time = ms_util.bare_and_pipeline(net, loss, opt, bs, size,
                                           lambda: create_dataset_imagenet(samples, True, bs, size), args.quick, 4)

    emit({"recipe": "tinydarknet_ms", "framework": "mindspore", "framework_version": ms.__version__, "batch_size": bs,
          "image_size": size, "bare": bare, "pipeline": pipe, "op_time": op_time, "flops_per_image_train": flops,
          "flops_method": ms_util.__doc__.split("\n\n")[1].replace("\n", " "),
          "matmul_flops_per_sec": matmul, "threads": {"ms_workers": "framework default"},
          "notes": "batch 32 instead of the recipe's 128 on this 2-core CPU, to keep the run short"})


if __name__ == "__main__":
    main()
