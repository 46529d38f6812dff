"""``CIFAR100Local``: the CIFAR-100 python pickles, read without trusting them.

mmcls' ``CIFAR100`` checks the official MD5 sums and downloads the archive otherwise, and unpickles with
the stock ``pickle``. This type reads the same ``cifar-100-python/{train,test,meta}`` files through
``common.cifar`` (a restricted unpickler that admits only containers and numpy arrays), so it accepts
the official files unchanged and any locally built dataset of the same format; mmcls' own class and
its checks are left as they are.
"""
from __future__ import annotations

import numpy as np
from mmcls.datasets import CIFAR100, DATASETS, BaseDataset

from common.cifar import DatasetError, load_cifar100


@DATASETS.register_module()
class CIFAR100Local(BaseDataset):
    """``data_prefix`` is the ``cifar-100-python`` folder or a folder holding it.

    ``max_samples`` keeps only the first N samples (short smoke and learning runs); ``None`` keeps all.
    """

    CLASSES = CIFAR100.CLASSES

    def __init__(self, data_prefix, pipeline, classes=None, ann_file=None, test_mode=False, max_samples=None):
        if max_samples is not None and (not isinstance(max_samples, int) or max_samples <= 0):
            raise DatasetError(f"{data_prefix}: max_samples must be a positive integer, got {max_samples!r}")
        self.max_samples = max_samples
        super().__init__(data_prefix, pipeline, classes=classes, ann_file=ann_file, test_mode=test_mode)

    def load_annotations(self):
        split = "test" if self.test_mode else "train"
        imgs, fine_labels, _ = load_cifar100(self.data_prefix, split)
        if self.max_samples is not None:
            imgs, fine_labels = imgs[:self.max_samples], fine_labels[:self.max_samples]
        if len(imgs) == 0:
            raise DatasetError(f"{self.data_prefix}: the {split} split holds no images")
        return [{"img": img, "gt_label": np.array(label, dtype=np.int64)} for img, label in zip(imgs, fine_labels)]
