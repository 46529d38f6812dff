"""CIFAR-10 arrays, read and checked with numpy only (so bad data fails before TensorFlow is imported)."""
from __future__ import annotations

import numpy as np

from common.cifar import DatasetError, load_cifar10

NUM_CLASSES = 10
IMG_SIZE = 32


def load_arrays(data_dir):
    """``(x_train, y_train, x_test, y_test, names)``: uint8 NHWC images and int64 labels.

    Raises ``DatasetError`` (one line, naming the file) for a missing folder, truncated or unsafe pickle,
    or arrays of the wrong shape.
    """
    x_train, y_train, x_test, y_test, names = load_cifar10(data_dir)
    if len(x_train) == 0 or len(x_test) == 0:
        raise DatasetError(f"{data_dir}: the training or test split is empty")
    return x_train, y_train, x_test, y_test, names


def one_hot(labels, num_classes=NUM_CLASSES):
    """float32 one-hot rows, as keras ``to_categorical`` gives the original."""
    return np.eye(num_classes, dtype=np.float32)[np.asarray(labels, dtype=np.int64)]


def shard(x, y, index, count):
    """Every ``count``-th sample starting at ``index``: each worker of a multi-worker job reads its own part."""
    if count == 1:
        return x, y
    return x[index::count], y[index::count]
