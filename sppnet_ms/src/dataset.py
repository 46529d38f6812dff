"""ImageNet-style folders -> MindSpore pipelines, as the original ``src/dataset.py``.

Train: random-resized crop (scale 0.08-1, ratio 3/4-4/3) + horizontal flip, plus colour jitter for the SPPNet
models; the multi-size model's 180 epochs crop at 224 and then resize to 180. Eval: resize to a 256x256 square
(not aspect-preserving, as the original), centre crop 224. ImageNet mean/std on 0-255 pixels, HWC -> CHW.

Files are listed and (by default) checked before training with ``common.imagefolder``, so a corrupt JPEG stops
the run with its path (or is skipped and reported with ``--skip_bad_images``) instead of failing inside the
pipeline. The reader hands MindSpore the encoded bytes, decoded in its C++ ops as the original's
(``RandomCropDecodeResize``, ``Decode``): no Python decoding under the GIL. With checking off, the reader still
names a file that is empty, cut short or not an image (cheap byte checks, no decode).
"""
import os
from dataclasses import dataclass, field

import numpy as np
import mindspore.dataset as ds
import mindspore.dataset.vision as vision
from mindspore import dtype as mstype
import mindspore.dataset.transforms as transforms

from common.imagefolder import ImageFolderError, encoded_problem, list_images, resolve_split, vet_images
from common.imagefolder import class_names as imagefolder_class_names

from .config import MULT_SIZES

MEAN = [0.485 * 255, 0.456 * 255, 0.406 * 255]
STD = [0.229 * 255, 0.224 * 255, 0.225 * 255]


def load_split(path, split, vet=True, skip_bad=False, log=print, classes=None):
    """``path`` is the split folder or its parent. Returns (samples [(file, label)], class names).

    Without ``classes`` the labels number the split's non-empty class folders in sorted order (training's
    numbering). With ``classes`` (training's names, label = index) each folder is labelled by its name, so a
    class missing from this split, or an empty folder in either, cannot shift a label; a folder with images
    under a name training never saw stops with its path (``common.imagefolder.list_images``).
    """
    root = resolve_split(path, split)
    samples, classes = list_images(root, classes=classes, log=log)
    if vet:
        samples, _ = vet_images(samples, skip_bad=skip_bad, log=log)
    return samples, classes


def class_names(path, split):
    """The class names a run numbers: the split's non-empty class folders, sorted (``list_images``' rule),
    each folder read only up to its first image; the empty ones are reported when the data is loaded."""
    return imagefolder_class_names(resolve_split(path, split))


class _Reader:
    """Random-access source of (encoded image bytes, int32 label) for ``GeneratorDataset``."""

    def __init__(self, samples):
        self.samples = list(samples)

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        path, label = self.samples[index]
        try:
            data = np.fromfile(path, dtype=np.uint8)
        except OSError as exc:
            raise ImageFolderError(f'{path}: unreadable ({exc.strerror})') from None
        problem = encoded_problem(data)  # before MindSpore's decoder, which a broken JPEG header crashes
        if problem:
            raise ImageFolderError(f'{path}: {problem}')
        return data, np.int32(label)


def second_size(image_size):
    """The multi-size model's other size: 180 for 224, the same ratio for other sizes."""
    return int(round(image_size * MULT_SIZES[1] / MULT_SIZES[0]))


def train_transforms(train_model, image_size, resize_to=None):
    ops = [vision.RandomCropDecodeResize(image_size, scale=(0.08, 1.0), ratio=(0.75, 1.333))]
    if resize_to:
        ops.append(vision.Resize(resize_to))
    ops.append(vision.RandomHorizontalFlip(prob=0.5))
    if train_model != 'zfnet':
        ops.append(vision.RandomColorAdjust(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1))
    return ops + [vision.Normalize(mean=MEAN, std=STD), vision.HWC2CHW()]


def eval_transforms(image_size):
    square = int(round(image_size * 256 / 224))
    return [vision.Decode(), vision.Resize((square, square)), vision.CenterCrop(image_size),
            vision.Normalize(mean=MEAN, std=STD), vision.HWC2CHW()]


def create_dataset_imagenet(samples, batch_size, train_model='sppnet_single', training=True, image_size=224,
                            resize_to=None, num_shards=None, shard_id=None, workers=None, steps=None,
                            augment=True):
    """A batched pipeline over ``samples``.

    ``resize_to`` (training only) resizes after the crop, for the multi-size model's small epochs.
    ``steps`` fixes the number of batches per pass (the original's ``--sink_size``), repeating if needed.
    ``augment=False`` trains on the evaluation transforms (shuffled): for tiny smoke and learning runs only.
    Training batches drop the remainder as the original; evaluation keeps every image.
    """
    workers = workers or min(8, os.cpu_count() or 1)
    data = ds.GeneratorDataset(_Reader(samples), column_names=['image', 'label'], shuffle=training,
                               num_parallel_workers=workers, python_multiprocessing=False,
                               num_shards=num_shards, shard_id=shard_id)
    if training and augment:
        ops = train_transforms(train_model, image_size, resize_to)
    else:
        ops = eval_transforms(resize_to or image_size)
    data = data.map(operations=ops, input_columns='image', num_parallel_workers=workers)
    data = data.map(operations=transforms.TypeCast(mstype.int32), input_columns='label')
    data = data.batch(batch_size, drop_remainder=training)
    if steps:
        per_pass = data.get_dataset_size()
        if per_pass == 0:
            raise ImageFolderError(f"{len(samples)} images give no batch of {batch_size}")
        if steps > per_pass:
            data = data.repeat(-(-steps // per_pass))
        data = data.take(steps)
    return data


@dataclass
class TrainData:
    """A run's images and pipelines: ``train(epoch)`` builds a fresh training pipeline seeded by the epoch (so a
    resumed run sees the same data order) and returns it with its input size; ``eval()`` the evaluation one.

    ``steps_per_epoch`` is the dataset's batches per rank, or ``--sink_size`` when given (the original's), capped
    by ``--train_steps``. ``sizes``: the input size, then the multi-size model's small one.
    """
    train_samples: list
    eval_samples: list
    classes: list
    sizes: list
    steps_per_epoch: int
    batch_size: int
    train_model: str
    seed: int
    workers: int = None
    augment: bool = True
    shards: dict = field(default_factory=dict)

    @classmethod
    def from_args(cls, args, ctx):
        from common.cli import steps_per_epoch
        train, classes = load_split(args.train_path, 'train', args.vet_images, args.skip_bad_images, ctx.log)
        # val is labelled by training's class names, not by its own folder list (which may lack a class)
        evaluation, _ = load_split(args.eval_path, 'val', args.vet_images, args.skip_bad_images, ctx.log,
                                   classes=classes)
        sizes = [args.image_size] + ([second_size(args.image_size)] if args.train_model == 'sppnet_mult' else [])
        batch = args.cfg.batch_size
        per_pass = len(train) // ctx.group_size // batch
        if per_pass == 0:
            raise ImageFolderError(f"{args.train_path}: {len(train)} images over {ctx.group_size} rank(s) give no "
                                   f"batch of {batch}; lower --batch_size")
        steps = steps_per_epoch(args.sink_size if args.sink_size > 0 else per_pass, args.train_steps)
        shards = dict(num_shards=ctx.group_size, shard_id=ctx.rank) if ctx.group_size > 1 else {}
        return cls(train, evaluation, classes, sizes, steps, batch, args.train_model, args.cfg.seed, args.workers,
                   args.augment, shards)

    def train(self, epoch):
        ds.config.set_seed(self.seed + epoch)
        small = self.train_model == 'sppnet_mult' and epoch % 2 == 1
        size = self.sizes[1] if small else self.sizes[0]
        return create_dataset_imagenet(self.train_samples, self.batch_size, self.train_model, True, self.sizes[0],
                                       resize_to=size if small else None, workers=self.workers,
                                       steps=self.steps_per_epoch, augment=self.augment, **self.shards), size

    def eval(self):
        return create_dataset_imagenet(self.eval_samples, self.batch_size, self.train_model, False, self.sizes[0],
                                       workers=self.workers)
