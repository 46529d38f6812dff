"""A "plain PyTorch" peer of each recipe's model, for the bench's `plain PyTorch img/s` column.

Each builder below is the recipe's network written the way a PyTorch user would write it in eager mode: stock
``torch.nn`` layers, no compilation, no custom kernels, default optimiser implementations. Each has exactly the
recipe model's trainable parameter count (ci/tests/test_peer_torch.py compares it with the count the recipe's
own code gives). The training step is forward, loss, backward, optimiser step on one fixed in-memory batch,
with the recipe's optimiser type, weight-decay coverage and loss, so the figure says what an ordinary PyTorch
implementation of the same model reaches on the same machine: a yardstick for the recipe, whatever its
framework.

Both memory formats are timed, their windows interleaved in one process (the machine's speed drifts over
minutes, see pool_rounds in ci/bench.py), and the faster one is the peer's figure: choosing the layout is what
a plain PyTorch user would do.

    python -m ci.benchlib.peer_torch RECIPE [--batch_size N] [--quick]
"""
from __future__ import annotations

import argparse
import copy
import statistics

import torch
import torch.nn.functional as F
from torch import nn

from ci.benchlib import emit, timed_windows


# -- cspnet_tf1: CSPDarknet53 for 32x32 CIFAR-10 -----------------------------------------------------------
class BatchAxisNorm(nn.Module):
    """Statistics of every (channel, y, x) position over the batch alone, eps 1e-3, no affine, no running
    averages: the recipe's normalisation (cspnet_tf1/utils.py batch_norm), hence no parameters.

    As a 2-D batch norm over the flattened positions each position is one feature, so the stock fused kernel
    computes it; a channels_last map is flattened in its own memory order so the flattening is a view, not a
    copy (the statistics do not depend on the order of the positions)."""

    def forward(self, x):
        b, c, h, w = x.shape
        nhwc = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        flat = (x.permute(0, 2, 3, 1) if nhwc else x).reshape(b, -1)
        y = F.batch_norm(flat, None, None, training=True, eps=1e-3)
        return y.view(b, h, w, c).permute(0, 3, 1, 2) if nhwc else y.view(b, c, h, w)


def _cbm(cin, cout, k, stride=1):
    # TF's SAME padding puts the odd pad of a stride-2 conv at the bottom/right; k // 2 on both sides gives
    # the same output sizes at these even map sizes, hence the same FLOPs
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2), BatchAxisNorm(), nn.Mish())


class _CspStage2(nn.Module):
    def __init__(self):
        super().__init__()
        self.down, self.part0, self.part1 = _cbm(32, 64, 3, 2), _cbm(64, 64, 1), _cbm(64, 64, 1)
        self.res = nn.Sequential(_cbm(64, 32, 1), _cbm(32, 64, 3))
        self.out = _cbm(64, 64, 1)

    def forward(self, x):
        x = self.down(x)
        p1 = self.part1(x)
        return torch.cat([self.part0(x), self.out(self.res(p1) + p1)], 1)


class _CspStage(nn.Module):
    def __init__(self, cin, ch, blocks):
        super().__init__()
        half = ch // 2
        self.down = nn.Sequential(_cbm(cin, half, 1), _cbm(half, ch, 3, 2))
        self.part0 = _cbm(ch, half, 1)
        # the recipe's SmallBlocks have no residual addition
        self.part1 = nn.Sequential(_cbm(ch, half, 1), *[m for _ in range(blocks)
                                                          for m in (_cbm(half, half, 1), _cbm(half, half, 3))],
                                   _cbm(half, half, 1))

    def forward(self, x):
        x = self.down(x)
        return torch.cat([self.part0(x), self.part1(x)], 1)


def cspdarknet53(num_classes=10):
    return nn.Sequential(_cbm(3, 32, 3), _CspStage2(),
                         *[_CspStage(cin, ch, n) for cin, ch, n in ((128, 128, 2), (128, 256, 8), (256, 512, 8),
                                                                    (512, 1024, 4))],
                         _cbm(1024, 1024, 1), nn.Flatten(), nn.Linear(1024, num_classes))


# -- residual networks (cutmix_tf2's Keras ResNet-20 v1, resnet50_cifar_pt's mmcls ResNet_CIFAR) -------------
class Residual(nn.Module):
    def __init__(self, body, shortcut=None):
        super().__init__()
        self.body, self.shortcut = body, shortcut or nn.Identity()

    def forward(self, x):
        return F.relu(self.body(x) + self.shortcut(x))


def _keras_bn(c):
    # Keras BatchNormalization defaults: eps 1e-3, moving-average momentum 0.99 (PyTorch's 0.01)
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)


def resnet20_keras(num_classes=10):
    """Every conv keeps its bias; the two projection shortcuts are bare strided 1x1 convs (no BN), as the
    recipe's cutmix_tf2/src/model.py."""
    def conv_bn(cin, cout, stride=1, relu=True):
        return [nn.Conv2d(cin, cout, 3, stride, 1), _keras_bn(cout)] + ([nn.ReLU()] if relu else [])
    layers, cin = [*conv_bn(3, 16)], 16
    for stack, width in enumerate((16, 32, 64)):
        for block in range(3):
            stride = 2 if stack and not block else 1
            layers.append(Residual(nn.Sequential(*conv_bn(cin, width, stride), *conv_bn(width, width, relu=False)),
                                   nn.Conv2d(cin, width, 1, stride) if stride != 1 else None))
            cin = width
    return nn.Sequential(*layers, nn.AvgPool2d(8), nn.Flatten(), nn.Linear(64, num_classes))


def _bottleneck(cin, mid, stride):
    out = 4 * mid
    body = nn.Sequential(nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(),
                         nn.Conv2d(mid, mid, 3, stride, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(),
                         nn.Conv2d(mid, out, 1, bias=False), nn.BatchNorm2d(out))
    short = (nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False), nn.BatchNorm2d(out))
             if stride != 1 or cin != out else None)
    return Residual(body, short)


def resnet50_cifar(num_classes=100):
    """ResNet-50 with the CIFAR stem (3x3 stride-1 conv, no max-pool) and the stride on each stage's first
    3x3 conv, as mmcls's ResNet_CIFAR (depth 50, style pytorch) + global average pool + linear head."""
    layers, cin = [nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU()], 64
    for i, (mid, blocks) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3))):
        for b in range(blocks):
            layers.append(_bottleneck(cin, mid, 2 if i and not b else 1))
            cin = 4 * mid
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, num_classes))


# -- sppnet_ms (train_model zfnet) ---------------------------------------------------------------------------
def zfnet(num_classes=1000, image_size=224, drop=0.35):
    """sppnet_ms's ZFNet: LRN after conv1 and conv2 with MindSpore's P.LRN defaults (x / (1 + sum of x^2 over
    11 channels)^0.5; PyTorch divides alpha by the window size, hence alpha 11), dropout 1 - keep 0.65."""
    def lrn():
        return nn.LocalResponseNorm(11, alpha=11.0, beta=0.5, k=1.0)
    side = image_size
    for _ in range(2):  # conv /2 (MindSpore 'same': ceil), then the 3x3/2 'valid' pool
        side = ((side + 1) // 2 - 3) // 2 + 1
    side = (side - 3) // 2 + 1
    return nn.Sequential(
        # padding 3 / 2 give 'same''s ceil(size / 2) outputs at every input size (pads split differently)
        nn.Conv2d(3, 96, 7, 2, 3), nn.ReLU(), lrn(), nn.MaxPool2d(3, 2),
        nn.Conv2d(96, 256, 5, 2, 2), nn.ReLU(), lrn(), nn.MaxPool2d(3, 2),
        nn.Conv2d(256, 384, 3, 1, 1), nn.ReLU(), nn.Conv2d(384, 384, 3, 1, 1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(3, 2), nn.Flatten(),
        nn.Linear(256 * side * side, 4096), nn.ReLU(), nn.Dropout(drop),
        nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(drop), nn.Linear(4096, num_classes))


# -- tinydarknet_ms ------------------------------------------------------------------------------------------
# (kernel, out_channels, 2x2 max-pool after it), layers 1..15; the 16th is the num_classes 1x1 classifier conv
TINY_DARKNET = [(3, 16, True), (3, 32, True), (1, 16, False), (3, 128, False), (1, 16, False), (3, 128, True),
                (1, 32, False), (3, 256, False), (1, 32, False), (3, 256, True), (1, 64, False), (3, 512, False),
                (1, 64, False), (3, 512, False), (1, 128, False)]


def tiny_darknet(num_classes=1000):
    """conv (no bias) + BN (eps 1e-3; MindSpore's momentum 0.9 is PyTorch's 0.1) + LeakyReLU(0.2) throughout,
    the classifier conv included, then the global mean."""
    layers, cin = [], 3
    for k, cout, pool in TINY_DARKNET + [(1, num_classes, False)]:
        layers += [nn.Conv2d(cin, cout, k, 1, k // 2, bias=False), nn.BatchNorm2d(cout, eps=1e-3),
                   nn.LeakyReLU(0.2)]
        layers += [nn.MaxPool2d(2, 2)] if pool else []
        cin = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())


# recipe -> the peer's builder and the bench's settings for it: batch size and image size as the recipe's bare
# loop (ci/benchlib/<recipe>.py), classes as the recipe's default model, the optimiser as the recipe's (lr as the
# bare loop; `decay` says which tensors get weight decay: the recipe's L2 terms / parameter groups), the loss's
# label smoothing, and the input's value range as the bare loop's batch
PEERS = {
    # L2 of 5e-4 on the "weights" collection (conv kernels and the FC matrix): lmbda * l2_loss = 5e-4/2 * w^2,
    # whose gradient is SGD's coupled weight decay 5e-4
    "cspnet_tf1": dict(build=cspdarknet53, batch_size=64, image_size=32, num_classes=10, opt="sgd", lr=1e-3,
                       momentum=0.9, weight_decay=5e-4, decay="weights", smoothing=0.0, pixels="0-255"),
    # Keras Adam defaults (eps 1e-7); l2(1e-4) on conv kernels only adds 1e-4 * w^2, gradient 2e-4 * w
    "cutmix_tf2": dict(build=resnet20_keras, batch_size=32, image_size=32, num_classes=10, opt="adam", lr=1e-3,
                       eps=1e-7, weight_decay=2e-4, decay="conv", smoothing=0.0, pixels="0-1"),
    # mmcv's default optimiser constructor decays every parameter
    "resnet50_cifar_pt": dict(build=resnet50_cifar, batch_size=16, image_size=32, num_classes=100, opt="sgd",
                              lr=0.1, momentum=0.9, weight_decay=5e-4, decay="all", smoothing=0.0, pixels="normal"),
    "sppnet_ms": dict(build=zfnet, batch_size=16, image_size=224, num_classes=1000, opt="sgd", lr=0.01,
                      momentum=0.9, weight_decay=1e-4, decay="weights", smoothing=0.0, pixels="normal"),
    # CrossEntropySmooth(0.1) puts 0.1 / (C - 1) on the wrong classes, PyTorch's label_smoothing 0.1 / C on every
    # class: the same cost, a 1e-4 difference in the target
    "tinydarknet_ms": dict(build=tiny_darknet, batch_size=32, image_size=224, num_classes=1000, opt="sgd", lr=0.1,
                           momentum=0.9, weight_decay=1e-4, decay="weights", smoothing=0.1, pixels="normal"),
}
DECAY = {"all": lambda p: True, "weights": lambda p: p.ndim > 1, "conv": lambda p: p.ndim == 4}


def build(recipe: str, num_classes: int | None = None) -> nn.Module:
    spec = PEERS[recipe]
    return spec["build"](spec["num_classes"] if num_classes is None else num_classes)


def trainable_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def optimizer(recipe: str, model: nn.Module, lr: float | None = None):
    spec = PEERS[recipe]
    lr = spec["lr"] if lr is None else lr
    decayed = DECAY[spec["decay"]]
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if decayed(p)], "weight_decay": spec["weight_decay"]},
              {"params": [p for p in params if not decayed(p)], "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if spec["opt"] == "adam":
        return torch.optim.Adam(groups, lr=lr, eps=spec["eps"])
    return torch.optim.SGD(groups, lr=lr, momentum=spec["momentum"])


def batch(recipe: str, batch_size: int, num_classes: int | None = None, seed: int = 0):
    spec = PEERS[recipe]
    g = torch.Generator().manual_seed(seed)
    shape = (batch_size, 3, spec["image_size"], spec["image_size"])
    x = {"0-255": lambda: torch.rand(shape, generator=g) * 255, "0-1": lambda: torch.rand(shape, generator=g),
         "normal": lambda: torch.randn(shape, generator=g)}[spec["pixels"]]()
    y = torch.randint(0, spec["num_classes"] if num_classes is None else num_classes, (batch_size,), generator=g)
    return x, y


def train_step(recipe: str, model: nn.Module, opt, x, y):
    """One closure per (model, batch): forward, loss, backward, optimiser step; returns the loss."""
    smoothing = PEERS[recipe]["smoothing"]

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y, label_smoothing=smoothing)
        loss.backward()
        opt.step()
        return loss.detach()
    return step


def prepared(recipe: str, model: nn.Module, x, y, channels_last: bool, lr: float | None = None):
    """The training step of ``model`` (moved to the format in place) on ``x`` in the same format."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt).train()
    x = x.contiguous(memory_format=fmt)
    return train_step(recipe, model, optimizer(recipe, model, lr), x, y)


FORMATS = ("contiguous", "channels_last")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="plain PyTorch peer of a recipe's model: bare training-step loop")
    ap.add_argument("recipe", choices=sorted(PEERS))
    ap.add_argument("--batch_size", type=int, help="default: the recipe's bare-loop batch size")
    ap.add_argument("--quick", action="store_true", help="fewer timed windows")
    args = ap.parse_args(argv)
    from ci.benchlib import torch_util
    spec = PEERS[args.recipe]
    bs = args.batch_size or spec["batch_size"]
    torch.manual_seed(0)
    base = build(args.recipe)
    x, y = batch(args.recipe, bs)
    # the same initial weights in both formats
    steps = {f: prepared(args.recipe, copy.deepcopy(base), x, y, f == "channels_last") for f in FORMATS}
    windows = 3 if args.quick else 5
    # warm-up, then one step timed to size the windows: a plain eager step can take from a tenth of a second
    # to ten (CSPDarknet53's small-map convolutions), so a fixed step count would give windows far too short
    # for some recipes and runs far too long for others
    res = {f: timed_windows(steps[f], bs, warmup=2, windows=1, steps_per_window=1) for f in FORMATS}
    window_s = 2.0 if args.quick else 4.0
    for f in FORMATS:
        rate = res[f].pop("window_images_per_sec")[0]
        res[f].update(warmup_steps=3, warmup_seconds=round(res[f]["warmup_seconds"] + bs / rate, 3),
                      steps_per_window=max(1, round(window_s * rate / bs)),
                      window_images_per_sec=[])
    # one window of each format in turn: both see the same drift of the machine's speed
    for _ in range(windows):
        for f in FORMATS:
            one = timed_windows(steps[f], bs, warmup=0, windows=1, steps_per_window=res[f]["steps_per_window"])
            res[f]["window_images_per_sec"] += one["window_images_per_sec"]
    for f in FORMATS:
        res[f]["images_per_sec"] = statistics.median(res[f]["window_images_per_sec"])
    best = max(FORMATS, key=lambda f: res[f]["images_per_sec"])
    del steps
    # forward x 3, as the TF and MindSpore bench modules count theirs, so the figure compares with the table's
    # GFLOP/img for every recipe (a counted backward skips the first conv's input gradient); batch 2, halved:
    # the recipe's batch-axis normalisation needs more than one sample
    from torch.utils.flop_counter import FlopCounterMode
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        base.train()(batch(args.recipe, 2)[0])
    flops = 3 * counter.get_total_flops() // 2
    emit({"recipe": args.recipe, "framework": "torch (plain eager)", "framework_version": torch.__version__,
          "batch_size": bs, "image_size": spec["image_size"], "num_classes": spec["num_classes"],
          "params": trainable_params(base), "formats": res, "best_format": best,
          "peer": {"images_per_sec": res[best]["images_per_sec"], "format": best},
          "optimizer": f"{spec['opt']} lr {spec['lr']} weight decay {spec['weight_decay']} ({spec['decay']})",
          "label_smoothing": spec["smoothing"], "flops_per_image_train": flops,
          "flops_method": "torch.utils.flop_counter.FlopCounterMode over one forward at batch 2, halved, x 3 for "
                          "forward + backward (convolutions and matmuls)", "threads": torch_util.threads()})


if __name__ == "__main__":
    main()
