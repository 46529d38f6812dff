"""Bench pieces for sppnet_ms (ZFNet): bare graph-mode TrainOneStepCell loop, counted FLOPs, data pipeline."""
from __future__ import annotations


import numpy as np

from ci.benchlib import emit, recipe_args, timed_windows



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
    windows = 3 if args.quick else 5
    net = SppNet(1000, "train", True, args.train_model, size)
    flops = 3 * ms_util.forward_flops(net, ms.Tensor(np.zeros((1, 3, size, size), np.float32)))
    loss = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
    opt = nn.Momentum(net.trainable_params(), learning_rate=0.01, momentum=0.9, weight_decay=1e-4)
    step_cell = nn.TrainOneStepCell(nn.WithLossCell(net, loss), opt)
    step_cell.set_train()
    rs = np.random.RandomState(0)
    x = ms.Tensor(rs.randn(bs, 3, size, size).astype(np.float32))
    y = ms.Tensor(rs.randint(0, 1000, bs).astype(np.int32))
    bare = timed_windows(lambda: step_cell(x, y).asnumpy(), bs, warmup=2, windows=windows,
                         steps_per_window=2 if args.quick else 3)

    samples, _ = load_split(args.data, "train", vet=False)
    it = [None]

    def next_batch():
        try:
            next(it[0])
        except (StopIteration, TypeError):
            it[0] = create_dataset_imagenet(samples, bs, args.train_model, True, size).create_tuple_iterator(num_epochs=1)
            next(it[0])
    pipe = timed_windows(next_batch, bs, warmup=2, windows=windows, steps_per_window=3)

    emit({"recipe": "sppnet_ms", "framework": "mindspore", "framework_version": ms.__version__, "batch_size": bs,
          "train_model": args.train_model, "image_size": size, "bare": bare, "pipeline": pipe,
          "flops_per_image_train": flops, "flops_method": ms_util.__doc__.split("\n\n")[1].replace("\n", " "),
          "matmul_flops_per_sec": ms_util.matmul_rate(), "threads": {"ms_workers": "framework default"},
          "notes": "ZFNet at batch 16 instead of the recipe's 256 on this 2-core CPU, to keep the run short"})


if __name__ == "__main__":
    main()
