"""Softmax cross-entropy against a label-smoothed one-hot target (on 1 - s, off s / (C - 1))."""
import mindspore as ms
import mindspore.nn as nn
import mindspore.ops as ops


class CrossEntropySmooth(nn.LossBase):
    def __init__(self, sparse=True, reduction="mean", smooth_factor=0.0, num_classes=1000):
        super().__init__()
        self.sparse = sparse
        self.num_classes = num_classes
        self.onehot = ops.OneHot()
        self.on_value = ms.Tensor(1.0 - smooth_factor, ms.float32)
        self.off_value = ms.Tensor(1.0 * smooth_factor / (num_classes - 1), ms.float32)
        self.ce = nn.SoftmaxCrossEntropyWithLogits(reduction=reduction)

    def construct(self, logit, label):
        if self.sparse:
            label = self.onehot(label, ops.shape(logit)[1], self.on_value, self.off_value)
        return self.ce(logit, label)
