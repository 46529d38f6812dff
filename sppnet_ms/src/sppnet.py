"""ZFNet and SPPNet (single- and multi-size) in one class, as the original ``src/sppnet.py``.

Five convolutions (ZFNet's 7x7/2 first layer), LRN after the first two, then either ZFNet's 3x3/2 max-pool or
the spatial pyramid pooling layer, and three fully connected layers with the per-model dropout.
"""
import math

import numpy as np
from mindspore import Tensor, nn, ops
from mindspore.common.initializer import HeNormal, Normal

from .config import get_config
from .spatial_pyramid_pooling import DEFAULT_LEVELS, SpatialPyramidPooling, output_length


class LRN(nn.Cell):
    """MindSpore ``P.LRN`` with its defaults, written in primitives: x / (bias + alpha * sum_11ch x^2) ^ beta.

    depth_radius 5, bias 1, alpha 1, beta 0.5 are the original's (``P.LRN()`` defaults); the CPU kernel was
    checked to compute exactly this sum over 2*5+1 channels. The sum over neighbouring channels is a 1x1
    convolution with a constant band matrix, so the network exports to ONNX, which has no MindSpore LRN.
    """

    def __init__(self, channels, depth_radius=5, bias=1.0, alpha=1.0, beta=0.5):
        super().__init__()
        idx = np.arange(channels)
        band = (np.abs(idx[:, None] - idx[None, :]) <= depth_radius).astype(np.float32)
        self.band = Tensor(band.reshape(channels, channels, 1, 1))
        self.bias, self.alpha, self.neg_beta = bias, alpha, -beta

    def construct(self, x):
        window_sum = ops.conv2d(x * x, ops.cast(self.band, x.dtype))
        if self.neg_beta == -0.5:
            # the original's beta: Sqrt and a division, whose gradients are elementwise arithmetic; Pow (and its
            # gradient's Pow and Log) took 30% of the CPU training step (MindSpore profiler, BENCHMARKS.md).
            # Not Rsqrt: MindSpore's ONNX exporter has no Rsqrt
            return x / ops.sqrt(self.bias + self.alpha * window_sum)
        return x * ops.pow(self.bias + self.alpha * window_sum, self.neg_beta)


INITS = ('normal', 'he')


def _weight_init(init):
    # 'normal' is the MindSpore 1.x default the original relied on (N(0, 0.01), zero biases); it needs thousands
    # of steps before the loss moves. 'he' (opt-in) is He-normal for ReLU, which learns small data quickly.
    if init not in INITS:
        raise ValueError(f"unknown init '{init}', expected one of {', '.join(INITS)}")
    return Normal(0.01) if init == 'normal' else HeNormal(nonlinearity='relu')


def _conv(cin, cout, k, init, stride=1, same=False):
    if same:
        return nn.Conv2d(cin, cout, k, stride=stride, pad_mode='same', has_bias=True,
                         weight_init=_weight_init(init), bias_init='zeros')
    return nn.Conv2d(cin, cout, k, stride=stride, pad_mode='pad', padding=k // 2, has_bias=True,
                     weight_init=_weight_init(init), bias_init='zeros')


def _dense(cin, cout, init):
    return nn.Dense(cin, cout, weight_init=_weight_init(init), bias_init='zeros')


def _pool_out(a):
    return (a - 3) // 2 + 1   # 3x3 stride-2 'valid' max-pool


def feature_side(image_size):
    """Side of conv5's output for a square input (13 at 224, 10 at 180)."""
    a = _pool_out(math.ceil(image_size / 2))           # conv1 /2 'same', pool
    return _pool_out(math.ceil(a / 2))                 # conv2 /2 'same', pool; conv3-5 keep the size


def min_image_size(train_model):
    """Smallest square input the model accepts: ZFNet's last pool needs a 3x3 map, SPP a 1x1 map."""
    need = 3 if train_model == 'zfnet' else 1
    size = 1
    while _pool_out(math.ceil(size / 2)) < 1 or feature_side(size) < need:
        size += 1
    return size


class SppNet(nn.Cell):
    """``train_model`` zfnet | sppnet_single | sppnet_mult; ``phase`` 'train' | 'test' (no dropout).

    ``init`` is 'normal' (the original's N(0, 0.01)) or 'he'. ``keep_prob`` overrides the model's dropout keep
    probability (0.65 / 0.59 / 0.58).

    ZFNet flattens a fixed-size map, so its first FC layer depends on ``image_size`` (9216 inputs at 224);
    the SPP models take any input of at least ``min_image_size`` and always produce 12,800 features.
    """

    def __init__(self, num_classes=1000, phase='train', include_top=True, train_model='sppnet_single',
                 image_size=224, spp_levels=DEFAULT_LEVELS, keep_prob=None, init='normal'):
        super().__init__()
        if keep_prob is None:
            keep_prob = get_config(train_model).keep_prob
        if phase != 'train':
            keep_prob = 1.0
        if image_size < min_image_size(train_model):
            raise ValueError(f"{train_model} needs inputs of at least {min_image_size(train_model)} pixels, "
                             f"got {image_size}")
        self.train_model = train_model
        self.include_top = include_top
        self.relu = nn.ReLU()
        self.max_pool = nn.MaxPool2d(kernel_size=3, stride=2, pad_mode='valid')
        self.conv1 = _conv(3, 96, 7, init, stride=2, same=True)
        self.lrn1 = LRN(96)
        self.conv2 = _conv(96, 256, 5, init, stride=2, same=True)
        self.lrn2 = LRN(256)
        self.conv3 = _conv(256, 384, 3, init)
        self.conv4 = _conv(384, 384, 3, init)
        self.conv5 = _conv(384, 256, 3, init)
        if train_model == 'zfnet':
            self.spp = None
            flat = 256 * _pool_out(feature_side(image_size)) ** 2
        else:
            self.spp = SpatialPyramidPooling(spp_levels)
            flat = output_length(256, spp_levels)
        self.flatten = nn.Flatten()
        if include_top:
            self.fc1 = _dense(flat, 4096, init)
            self.fc2 = _dense(4096, 4096, init)
            self.fc3 = _dense(4096, num_classes, init)
            self.dropout = nn.Dropout(p=1.0 - keep_prob)
            self.use_dropout = keep_prob < 1.0

    def construct(self, x):
        x = self.max_pool(self.lrn1(self.relu(self.conv1(x))))
        x = self.max_pool(self.lrn2(self.relu(self.conv2(x))))
        x = self.relu(self.conv3(x))
        x = self.relu(self.conv4(x))
        x = self.relu(self.conv5(x))
        if self.spp is None:
            x = self.flatten(self.max_pool(x))
        else:
            x = self.spp(x)
        if not self.include_top:
            return x
        x = self.relu(self.fc1(x))
        if self.use_dropout:
            x = self.dropout(x)
        x = self.relu(self.fc2(x))
        if self.use_dropout:
            x = self.dropout(x)
        return self.fc3(x)


def count_params(net):
    return sum(int(np.prod(p.shape)) for p in net.trainable_params())
