"""ImageNet-style folders -> MindSpore pipelines with the original's transforms.

Train: RandomCropDecodeResize(size, scale (0.08, 1), ratio (0.75, 1.333)), horizontal flip, colour jitter
(0.4, 0.4, 0.4, 0.1), ImageNet mean/std normalisation, HWC2CHW. Eval: Decode, Resize(short side 256/224 of
size), CenterCrop(size), Normalize, HWC2CHW. Labels int32, batches drop the remainder (train).

The file list is read and vetted once (``common.imagefolder``) and fed to MindSpore as encoded bytes, so
a bad file is reported with its path before training, and each epoch's order and augmentation depend only
on (seed, epoch): a resumed run sees the same data as an uninterrupted one.
"""
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import mindspore as ms
import mindspore.dataset as ds
import mindspore.dataset.vision as vision
import mindspore.dataset.transforms as transforms

from common.imagefolder import ImageFolderError, encoded_problem, list_images, resolve_split, vet_images

MEAN = [0.485 * 255, 0.456 * 255, 0.406 * 255]
STD = [0.229 * 255, 0.224 * 255, 0.225 * 255]


def find_split(path, split):
    """``path`` is the split folder itself or a folder holding ``split/`` (or ``imagenet/split/``)."""
    return resolve_split(path, split)


def find_val_split(val_data_dir, data_path, train_dir):
    """``val_data_dir`` if given (it must exist), else a val folder beside the train one, else None."""
    if val_data_dir:
        return find_split(val_data_dir, "val")
    try:
        val = find_split(data_path or str(Path(train_dir).parent), "val")
    except ImageFolderError:
        return None
    return val if Path(val).resolve() != Path(train_dir).resolve() else None


def load_samples(root, check=True, skip_bad=False, workers=1, log=print, classes=None):
    """Sorted (path, label) pairs and the class names; bad files stop the run or are skipped.

    Without ``classes`` the labels number ``root``'s non-empty class folders in sorted order (the train split, as
    ImageFolderDataset numbers them); with ``classes`` (training's names, label = index) each folder is labelled
    by its name, so a class missing from val or an extra empty folder in train cannot shift the val labels, and
    a folder training never saw stops with its path (``common.imagefolder.list_images``).
    """
    samples, classes = list_images(root, classes=classes, log=log)
    if check:
        samples = _vet(samples, skip_bad, max(1, workers), log)
    return samples, classes


def _vet(samples, skip_bad, workers, log):
    # decoding is mostly outside the GIL, so threads give a real speed-up on large folders
    chunks = [samples[i::workers] for i in range(workers)]
    if workers == 1:
        return vet_images(samples, skip_bad=skip_bad, log=log)[0]
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda c: vet_images(c, skip_bad=True, log=lambda _msg: None)
                                if c else ([], []), chunks))
    bad = sorted(b for _, bads in results for b in bads)
    if bad and not skip_bad:
        path, problem = bad[0]
        raise ImageFolderError(f"{path}: {problem} (use --skip_bad_images to skip such files)")
    for path, problem in bad:
        log(f"skipping bad image {path}: {problem}")
    if bad:
        log(f"skipped {len(bad)} bad image(s) of {len(samples)}")
    good = set(s for good, _ in results for s in good)
    if not good:
        raise ImageFolderError("no readable images left after skipping bad ones")
    return [s for s in samples if s in good]


class _EncodedImages:
    """Random-access source: (encoded file bytes, label) in this epoch's order, this rank's share."""

    def __init__(self, samples, order):
        self.samples = samples
        self.order = order

    def __len__(self):
        return len(self.order)

    def __getitem__(self, i):
        path, label = self.samples[self.order[i]]
        try:
            data = np.fromfile(path, dtype=np.uint8)
        except OSError as exc:
            raise ImageFolderError(f"{path}: unreadable ({exc.strerror})") from None
        problem = encoded_problem(data)  # before MindSpore's decoder, which a broken JPEG header crashes
        if problem:
            raise ImageFolderError(f"{path}: {problem} (run with --check_images to vet every file first)")
        return data, np.array(label, dtype=np.int32)


def epoch_order(n, shuffle, seed, epoch, rank=0, group_size=1):
    """Indices for one epoch: a (seed, epoch)-keyed permutation, split round-robin over ranks.

    Like MindSpore's DistributedSampler, the list wraps round to a multiple of the rank count so every rank
    runs the same number of steps.
    """
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    if group_size > 1:
        pad = (-n) % group_size
        order = np.concatenate([order, order[:pad]])[rank::group_size]
    return order


def default_workers(group_size=1):
    cores = os.cpu_count() or 1
    return max(1, min(24, cores) if group_size == 1 else cores // group_size)


def create_dataset_imagenet(samples, do_train, batch_size=128, image_size=224, seed=1, epoch=0,
                            rank=0, group_size=1, num_parallel_workers=0, max_steps=0, augment=True):
    """Batches of ``samples``; ``augment=False`` gives training batches the eval transforms (deterministic)."""
    workers = num_parallel_workers or default_workers(group_size)
    ds.config.set_seed(seed * 100003 + epoch)  # augmentation randomness of this epoch only
    order = epoch_order(len(samples), do_train, seed, epoch, rank, group_size)
    data = ds.GeneratorDataset(_EncodedImages(samples, order), ["image", "label"], shuffle=False,
                               python_multiprocessing=False, num_parallel_workers=1)
    if do_train and augment:
        ops = [vision.RandomCropDecodeResize(image_size, scale=(0.08, 1.0), ratio=(0.75, 1.333)),
               vision.RandomHorizontalFlip(prob=0.5),
               vision.RandomColorAdjust(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)]
    else:
        ops = [vision.Decode(), vision.Resize(int(round(image_size * 256 / 224))), vision.CenterCrop(image_size)]
    ops += [vision.Normalize(mean=MEAN, std=STD), vision.HWC2CHW()]
    data = data.map(operations=ops, input_columns="image", num_parallel_workers=workers)
    data = data.map(operations=transforms.TypeCast(ms.int32), input_columns="label", num_parallel_workers=1)
    # evaluation keeps the last partial batch so every image counts (the original dropped it)
    data = data.batch(batch_size, drop_remainder=do_train)
    if max_steps:
        data = data.take(max_steps)
    return data
