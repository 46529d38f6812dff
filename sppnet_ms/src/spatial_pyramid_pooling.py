"""Spatial pyramid pooling (He et al. 2015) that gives a fixed-length vector for any input size.

For a feature map of side ``a`` and a pyramid level of ``n`` bins per side the original uses a max-pool with
window ceil(a/n) and stride floor(a/n), a global max for n = 1, and one hand-written case (a = 10, n = 6:
zero-pad 1 pixel on each side, 2x2 stride-2 pool). It only knew a = 13 (224 input) and a = 10 (180 input).
Here the same rules are applied to any side, in this order:

1. window ceil(a/n), stride floor(a/n), when that yields exactly n bins that together cover the whole side
   (all of the original's cases but one; a plain 'valid' pool could otherwise drop the last rows);
2. window = stride = ceil(a/n) after zero-padding to n*window, split evenly over both sides, when no bin
   would lie entirely in the padding (this reproduces the original's a = 10, n = 6 case);
3. otherwise adaptive bins [floor(i*a/n), ceil((i+1)*a/n)) (sides that are too small or awkward, e.g. 8).

Zero padding equals -inf padding here because the input comes straight from a ReLU.
Levels are flattened per sample (channel-major) and concatenated finest first, as the original does.
"""
import math

from mindspore import nn, ops

DEFAULT_LEVELS = (6, 3, 2, 1)


def axis_plan(a, n):
    """How one axis of side ``a`` is cut into ``n`` bins.

    Returns ``('pool', window, stride, pad_before, pad_after)`` when a plain max-pool does it, else
    ``('adaptive', [(start, end), ...])``. ``n == 1`` is the global maximum, ``('pool', a, a, 0, 0)``.
    """
    if a < 1 or n < 1:
        raise ValueError(f"spatial pyramid pooling needs a side >= 1 and n >= 1, got side {a}, n {n}")
    window, stride = math.ceil(a / n), a // n
    if stride >= 1 and (n - 1) * stride + window == a:
        return ('pool', window, stride, 0, 0)
    pad = n * window - a
    before, after = pad // 2, pad - pad // 2
    if max(before, after) < window:
        return ('pool', window, window, before, after)
    return ('adaptive', [(i * a // n, -(-(i + 1) * a // n)) for i in range(n)])


def axis_bins(a, n):
    """The (start, end) rows or columns of the input that each of the ``n`` bins covers, clipped to [0, a)."""
    plan = axis_plan(a, n)
    if plan[0] == 'adaptive':
        return plan[1]
    _, window, stride, before, _ = plan
    return [(max(0, i * stride - before), min(a, i * stride - before + window)) for i in range(n)]


def output_length(channels, levels=DEFAULT_LEVELS):
    return channels * sum(n * n for n in levels)


class SpatialPyramidPooling(nn.Cell):
    """(N, C, H, W) -> (N, C * sum(n^2 for n in levels)) for any H, W >= 1."""

    def __init__(self, levels=DEFAULT_LEVELS):
        super().__init__()
        self.levels = tuple(levels)
        self.concat = ops.Concat(axis=1)

    def _level(self, x, n):
        _, _, h, w = x.shape
        if n == 1:
            return x.max(axis=(2, 3), keepdims=True)
        ph, pw = axis_plan(h, n), axis_plan(w, n)
        if ph[0] == 'pool' and pw[0] == 'pool':
            if ph[3] or ph[4] or pw[3] or pw[4]:
                x = ops.pad(x, (pw[3], pw[4], ph[3], ph[4]))
            return ops.MaxPool(kernel_size=(ph[1], pw[1]), strides=(ph[2], pw[2]), pad_mode='VALID')(x)
        rows = [x[:, :, r0:r1, :].max(axis=2, keepdims=True) for r0, r1 in axis_bins(h, n)]
        x = ops.concat(rows, axis=2)
        cols = [x[:, :, :, c0:c1].max(axis=3, keepdims=True) for c0, c1 in axis_bins(w, n)]
        return ops.concat(cols, axis=3)

    def construct(self, x):
        batch = x.shape[0]
        out = [self._level(x, n).reshape(batch, -1) for n in self.levels]
        return self.concat(out)
