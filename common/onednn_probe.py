"""Timed MindSpore convolution step for common/onednn.py's ISA probe (run as a child process).

A 3x3 convolution 64 -> 128 channels on 4 x 28 x 28, forward and both gradients, in graph mode as the
recipes run it; big enough that oneDNN's reference kernel (~1 GFLOP/s) takes about a second, so the
levels differ by far more than the noise. Prints ``MODELZOO_PROBE_SECONDS <best step seconds>``.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import mindspore as ms  # noqa: E402
from mindspore import nn  # noqa: E402

from common.cputune import PROBE_RESULT, time_steps  # noqa: E402


class Probe(nn.Cell):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(64, 128, 3, pad_mode="pad", padding=1, has_bias=False)

    def construct(self, x):
        return (self.conv(x) ** 2).sum()  # squared: the gradient needs the forward output, so all three run


def main():
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_device("CPU")
    net = Probe()
    grad = ms.grad(net, grad_position=0, weights=net.trainable_params())
    x = ms.Tensor(np.random.default_rng(0).random((4, 64, 28, 28), dtype=np.float32))

    def step():
        dx, dw = grad(x)
        dx.asnumpy(), dw[0].asnumpy()

    print(PROBE_RESULT, time_steps(step, warmup=1, repeat=2), flush=True)


if __name__ == "__main__":
    main()
