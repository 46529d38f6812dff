"""tf.data input pipeline and CutMix, as in the keras-io example the original ports.

Randomness is stateless and keyed by (seed, epoch, batch): epoch e of a resumed run sees exactly the
batches epoch e of an uninterrupted run saw. The distributions are the original's: every pair of a batch
draws its own lambda and box.
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


def paste(images1, labels1, images2, labels2, y1, x1, h, w, size=IMG_SIZE):
    """Per row of the batch, images2's box (y1, x1, h, w) over images1; labels mixed by the pasted area's share."""
    r = tf.range(size)
    rows = (r[None, :] >= y1[:, None]) & (r[None, :] < (y1 + h)[:, None])  # [B, size]
    cols = (r[None, :] >= x1[:, None]) & (r[None, :] < (x1 + w)[:, None])
    mask = tf.cast(rows[:, :, None, None] & cols[:, None, :, None], images1.dtype)  # [B, size, size, 1]
    images = images1 * (1.0 - mask) + images2 * mask
    lam = (1.0 - tf.cast(w * h, tf.float32) / float(size * size))[:, None]
    return images, lam * labels1 + (1.0 - lam) * labels2


def cutmix(batch1, batch2, seed):
    """CutMix of two batches row by row: each pair draws its own lambda and box centre (``seed``: shape [2])."""
    (images1, labels1), (images2, labels2) = batch1, batch2
    n = tf.shape(images1)[0]
    s_lam, s_x, s_y = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    lam = sample_beta(s_lam, shape=[n])
    cx = tf.random.stateless_uniform([n], seed=s_x, minval=0, maxval=IMG_SIZE, dtype=tf.int32)
    cy = tf.random.stateless_uniform([n], seed=s_y, minval=0, maxval=IMG_SIZE, dtype=tf.int32)
    return paste(images1, labels1, images2, labels2, *get_box(lam, cx, cy))


def _epoch_seed(seed, epoch, stream):
    # distinct, reproducible seed for each (epoch, stream); tensors so it works inside flat_map
    return tf.cast(seed, tf.int64) * 1_000_003 + tf.cast(epoch, tf.int64) * 16 + stream


def _shuffle(ds, seed):
    """``Dataset.shuffle`` whose order depends on ``seed`` alone.

    Dataset.shuffle pairs its seed with the graph-level one (tf.random.set_seed, which train.py calls with
    --seed). With a graph seed of 0 it then tests the tensor seed for truth and raises
    (``--seed 0`` crashed), and any other graph seed changes the order. The epochs are built inside a
    function graph (flat_map), whose graph seed is cleared while the op is made.
    """
    graph = tf.compat.v1.get_default_graph()
    saved, graph.seed = graph.seed, None
    try:
        return ds.shuffle(SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=False)
    finally:
        graph.seed = saved


def _one_epoch(x, y, epoch, seed, batch_size, use_cutmix=True, drop_remainder=False, steps=None,
               shuffle_baseline=False):
    """The batches of one epoch: two independently shuffled copies zipped, shuffled, batched, CutMix'ed.

    Without CutMix: keras-io's baseline (``train_ds_simple``), the training set in file order every epoch, not
    shuffled; ``shuffle_baseline`` shuffles it (one copy, the same 1024-sample buffer), which keras-io does not.
    """
    # Shuffling and zipping move whole samples; everything that computes (uint8 -> float, CutMix) runs once
    # per batch on [B, 32, 32, 3] tensors: per-sample map functions cost ~8x more pipeline time (BENCHMARKS.md)
    def copy(stream):
        return _shuffle(tf.data.Dataset.from_tensor_slices((x, y)), _epoch_seed(seed, epoch, stream))

    if use_cutmix:
        ds = _shuffle(tf.data.Dataset.zip((copy(0), copy(1))), _epoch_seed(seed, epoch, 2))
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        base = tf.stack([_epoch_seed(seed, epoch, 3), tf.constant(0, tf.int64)])
        ds = ds.enumerate().map(
            lambda i, pair: cutmix(preprocess_image(*pair[0]), preprocess_image(*pair[1]), base + tf.stack([0, i])),
            num_parallel_calls=AUTOTUNE)
    else:
        ds = copy(0) if shuffle_baseline else tf.data.Dataset.from_tensor_slices((x, y))
        ds = ds.batch(batch_size, drop_remainder=drop_remainder).map(preprocess_image, num_parallel_calls=AUTOTUNE)
    return ds.take(steps) if steps else ds


def train_dataset(x, y, first_epoch, epochs, seed, batch_size, **kw):
    """Epochs ``first_epoch..epochs-1`` back to back; ``fit`` cuts them apart with ``steps_per_epoch``."""
    x, y = tf.constant(x), tf.constant(y)
    ds = tf.data.Dataset.range(first_epoch, epochs)
    ds = ds.flat_map(lambda e: _one_epoch(x, y, e, seed, batch_size, **kw))
    return ds.prefetch(AUTOTUNE)


def train_epoch(x, y, epoch, seed, batch_size, **kw):
    """The batches of epoch ``epoch`` alone, exactly as ``train_dataset`` yields them (--save_samples)."""
    return train_dataset(x, y, epoch, epoch + 1, seed, batch_size, **kw)


def test_dataset(x, y, batch_size, drop_remainder=False):
    ds = tf.data.Dataset.from_tensor_slices((x, y)).map(preprocess_image, num_parallel_calls=AUTOTUNE)
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(AUTOTUNE)


def steps_per_epoch(n, batch_size, drop_remainder=False):
    """Batches in ``n`` samples (--train_steps caps this in train.py, through common.cli.steps_per_epoch)."""
    return n // batch_size if drop_remainder else -(-n // batch_size)
