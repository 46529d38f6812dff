"""tf.data input pipeline and CutMix, as in the keras-io example the original ports.

Randomness is stateless and keyed by (seed, epoch, sample): epoch e of a resumed run sees exactly the
batches epoch e of an uninterrupted run saw. The distributions are the original's.
"""
from __future__ import annotations

import tensorflow as tf

from src.data import IMG_SIZE

AUTOTUNE = tf.data.AUTOTUNE
SHUFFLE_BUFFER = 1024
ALPHA = BETA = 0.25  # the call site's values; the sampler's own defaults (0.2) are never used upstream


def preprocess_image(image, label):
    # resize turns uint8 into float32 in 0..255 (a no-op resize at 32x32), then scale to [0, 1]
    image = tf.image.resize(image, (IMG_SIZE, IMG_SIZE))
    image = tf.image.convert_image_dtype(image, tf.float32) / 255.0
    return image, label


def sample_beta(seed, alpha=ALPHA, beta=BETA, shape=()):
    """lambda ~ Beta(alpha, beta) as G1 / (G1 + G2) with two gamma variates."""
    s1, s2 = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    g1 = tf.random.stateless_gamma(shape, seed=s1, alpha=alpha)
    g2 = tf.random.stateless_gamma(shape, seed=s2, alpha=beta)
    return g1 / (g1 + g2)


def get_box(lam, cx, cy, size=IMG_SIZE):
    """(y1, x1, h, w) of the patch for mixing ratio ``lam`` centred on (cx, cy), clipped to the image."""
    cut = tf.cast(size * tf.sqrt(1.0 - lam), tf.int32)  # truncation, as int() upstream
    x1 = tf.clip_by_value(cx - cut // 2, 0, size)
    y1 = tf.clip_by_value(cy - cut // 2, 0, size)
    x2 = tf.clip_by_value(cx + cut // 2, 0, size)
    y2 = tf.clip_by_value(cy + cut // 2, 0, size)
    # a box of zero side (cut < 2) still pastes one pixel row/column upstream
    h = tf.maximum(y2 - y1, 1)
    w = tf.maximum(x2 - x1, 1)
    return y1, x1, h, w


def paste(image1, label1, image2, label2, y1, x1, h, w, size=IMG_SIZE):
    """image2's box over image1; labels mixed by the pasted area's share."""
    mask = tf.image.pad_to_bounding_box(tf.ones([h, w, 1], image1.dtype), y1, x1, size, size)
    image = image1 * (1.0 - mask) + image2 * mask
    lam = 1.0 - tf.cast(w * h, tf.float32) / float(size * size)
    return image, lam * label1 + (1.0 - lam) * label2


def cutmix(sample1, sample2, seed):
    """One CutMix pair with its own stateless ``seed`` (shape [2], int64)."""
    (image1, label1), (image2, label2) = sample1, sample2
    s_lam, s_x, s_y = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    lam = sample_beta(s_lam)
    cx = tf.random.stateless_uniform([], seed=s_x, minval=0, maxval=IMG_SIZE, dtype=tf.int32)
    cy = tf.random.stateless_uniform([], seed=s_y, minval=0, maxval=IMG_SIZE, dtype=tf.int32)
    return paste(image1, label1, image2, label2, *get_box(lam, cx, cy))


def _epoch_seed(seed, epoch, stream):
    # distinct, reproducible seed for each (epoch, stream); tensors so it works inside flat_map
    return tf.cast(seed, tf.int64) * 1_000_003 + tf.cast(epoch, tf.int64) * 16 + stream


def train_epoch(x, y, epoch, seed, batch_size, use_cutmix=True, drop_remainder=False, steps=None):
    """The batches of one epoch: two independently shuffled copies zipped, shuffled, CutMix'ed, batched."""
    def copy(stream):
        ds = tf.data.Dataset.from_tensor_slices((x, y))
        ds = ds.shuffle(SHUFFLE_BUFFER, seed=_epoch_seed(seed, epoch, stream), reshuffle_each_iteration=False)
        return ds.map(preprocess_image, num_parallel_calls=AUTOTUNE)

    if use_cutmix:
        ds = tf.data.Dataset.zip((copy(0), copy(1)))
        ds = ds.shuffle(SHUFFLE_BUFFER, seed=_epoch_seed(seed, epoch, 2), reshuffle_each_iteration=False)
        base = tf.stack([_epoch_seed(seed, epoch, 3), tf.constant(0, tf.int64)])
        ds = ds.enumerate().map(lambda i, pair: cutmix(pair[0], pair[1], base + tf.stack([0, i])),
                                num_parallel_calls=AUTOTUNE)
    else:
        ds = copy(0)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return ds.take(steps) if steps else ds


def train_dataset(x, y, first_epoch, epochs, seed, batch_size, **kw):
    """Epochs ``first_epoch..epochs-1`` back to back; ``fit`` cuts them apart with ``steps_per_epoch``."""
    x = tf.constant(x)
    y = tf.constant(y)
    ds = tf.data.Dataset.range(first_epoch, epochs)
    ds = ds.flat_map(lambda e: train_epoch(x, y, e, seed, batch_size, **kw))
    return ds.prefetch(AUTOTUNE)


def test_dataset(x, y, batch_size, drop_remainder=False):
    ds = tf.data.Dataset.from_tensor_slices((x, y)).map(preprocess_image, num_parallel_calls=AUTOTUNE)
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(AUTOTUNE)


def steps_per_epoch(n, batch_size, drop_remainder=False, steps=None):
    full = n // batch_size if drop_remainder else -(-n // batch_size)
    return min(full, steps) if steps else full
