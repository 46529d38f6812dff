"""CutMix and the tf.data pipeline: box geometry, pixel-exact pasting, label weights, reproducibility."""
import numpy as np
import pytest
import tensorflow as tf

from common import cli
from src import pipeline
from src.data import one_hot

RNG = np.random.default_rng(0)


def _box(lam, cx, cy):
    return [int(v) for v in pipeline.get_box(tf.constant(lam, tf.float32), tf.constant(cx), tf.constant(cy))]


def test_box_side_comes_from_sqrt_one_minus_lambda_and_is_clipped():
    # lambda 0.75 -> cut_rat 0.5 -> cut 16 -> corners centre +- 8, clipped to the image
    assert _box(0.75, 16, 16) == [8, 8, 16, 16]
    assert _box(0.75, 4, 30) == [22, 0, 10, 12]  # (y1, x1, h, w): x from 0..12, y from 22..32
    # lambda 0.5 -> cut int(22.6) = 22 -> half 11: an even side of 22
    assert _box(0.5, 20, 20) == [9, 9, 22, 22]


def test_zero_sized_box_pastes_one_pixel():
    # lambda ~1: cut = int(32 * 0.0316) = 1, cut // 2 = 0 -> zero side, which upstream turns into 1
    assert _box(0.999, 31, 0) == [0, 31, 1, 1]


def test_known_input_pasted_area_and_label_weights_agree_pixel_for_pixel():
    image1 = RNG.random((2, 32, 32, 3), dtype=np.float32)
    image2 = RNG.random((2, 32, 32, 3), dtype=np.float32) + 2.0  # never equal to image1
    y1, y2 = one_hot([3, 1]), one_hot([7, 2])
    # row 0: the box rows 22..31, columns 0..11; row 1: one pixel at (5, 31)
    boxes = [tf.constant(v) for v in ([22, 5], [0, 31], [10, 1], [12, 1])]
    image, label = pipeline.paste(tf.constant(image1), y1, tf.constant(image2), y2, *boxes)
    image, label = image.numpy(), label.numpy()
    expected = image1.copy()
    expected[0, 22:32, 0:12] = image2[0, 22:32, 0:12]
    expected[1, 5, 31] = image2[1, 5, 31]
    np.testing.assert_array_equal(image, expected)
    from_image2 = np.all(image == image2, axis=-1).sum(axis=(1, 2))
    assert list(from_image2) == [120, 1]
    assert label[0, 7] == 120 / 1024 and label[0, 3] == 1 - 120 / 1024
    assert label[1, 2] == 1 / 1024 and label[1, 1] == 1 - 1 / 1024
    assert np.all(np.count_nonzero(label, axis=1) == 2) and np.allclose(label.sum(axis=1), 1)


def test_every_pair_of_a_batch_draws_its_own_box_and_label_weight():
    n = 200
    zeros, ones = tf.zeros((n, 32, 32, 3)), tf.ones((n, 32, 32, 3))
    y1, y2 = one_hot([0] * n), one_hot([1] * n)
    images, labels = pipeline.cutmix((zeros, y1), (ones, y2), tf.constant([42, 0], tf.int64))
    images, labels = images.numpy()[..., 0], labels.numpy()
    areas = []
    for mask, label in zip(images, labels):
        rows, cols = np.nonzero(mask)
        assert mask.sum() >= 1  # at least one pixel, even for a zero-sized box
        # a filled rectangle
        assert mask.sum() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        np.testing.assert_allclose(label[1], mask.sum() / 1024, atol=1e-7)
        np.testing.assert_allclose(label[0], 1 - mask.sum() / 1024, atol=1e-6)
        areas.append(mask.sum())
    assert len(set(areas)) > n // 4  # not one box for the whole batch
    again = pipeline.cutmix((zeros, y1), (ones, y2), tf.constant([42, 0], tf.int64))[0].numpy()[..., 0]
    np.testing.assert_array_equal(images, again)  # stateless: the seed decides


def test_lambda_follows_beta_quarter_quarter():
    lam = pipeline.sample_beta(tf.constant([1, 2], tf.int64), shape=(20000,)).numpy()
    # Beta(0.25, 0.25): mean 1/2, variance ab / ((a+b)^2 (a+b+1)) = 1/6, U-shaped
    assert abs(lam.mean() - 0.5) < 0.02
    assert abs(lam.var() - 1 / 6) < 0.01
    assert (lam < 0.1).mean() > 0.3 and (lam > 0.9).mean() > 0.3


def test_preprocess_scales_to_unit_range():
    image, _ = pipeline.preprocess_image(tf.constant(np.full((32, 32, 3), 255, np.uint8)), 0)
    assert image.dtype == tf.float32 and float(tf.reduce_max(image)) == 1.0


def _data(n=70):
    return RNG.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), one_hot(RNG.integers(0, 10, n))


def test_static_shapes_drop_the_remainder():
    x, y = _data(70)
    dynamic = [b[0].shape[0] for b in pipeline.train_epoch(x, y, 0, 42, 32)]
    static = [b[0].shape[0] for b in pipeline.train_epoch(x, y, 0, 42, 32, drop_remainder=True)]
    assert dynamic == [32, 32, 6] and static == [32, 32]
    assert pipeline.steps_per_epoch(70, 32) == 3 and pipeline.steps_per_epoch(70, 32, True) == 2
    # --train_steps caps the epoch (train.py: common.cli.steps_per_epoch over the pipeline's count)
    assert cli.steps_per_epoch(pipeline.steps_per_epoch(70, 32), 1) == 1


def test_an_epoch_is_the_same_whether_or_not_the_run_was_resumed():
    x, y = _data(70)
    full = [b[0].numpy() for b in pipeline.train_dataset(x, y, 0, 3, 42, 32)]
    resumed = [b[0].numpy() for b in pipeline.train_dataset(x, y, 2, 3, 42, 32)]
    assert len(full) == 9 and len(resumed) == 3
    for a, b in zip(full[6:], resumed):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(full[0], full[3])  # epochs are shuffled and mixed differently
    other_seed = next(iter(pipeline.train_dataset(x, y, 0, 1, 7, 32)))[0].numpy()
    assert not np.array_equal(full[0], other_seed)
    # train_epoch (--save_samples) shows exactly the batches training sees
    for a, b in zip(full[3:6], pipeline.train_epoch(x, y, 1, 42, 32)):
        np.testing.assert_array_equal(a, b[0].numpy())


def test_the_batches_do_not_depend_on_the_global_seed():
    # tf.random.set_seed(0) (train.py --seed 0) made Dataset.shuffle test a tensor seed for truth and raise
    x, y = _data(70)
    batches = []
    for global_seed in (0, 5, None):
        tf.random.set_seed(global_seed)
        batches.append([b[0].numpy() for b in pipeline.train_dataset(x, y, 0, 2, 42, 32)])
    for other in batches[1:]:
        for a, b in zip(batches[0], other):
            np.testing.assert_array_equal(a, b)


def test_no_cutmix_gives_one_hot_labels_and_untouched_images():
    x, y = _data(40)
    images, labels = next(iter(pipeline.train_epoch(x, y, 0, 42, 40, use_cutmix=False)))
    labels = labels.numpy()
    assert set(np.unique(labels)) == {0.0, 1.0} and np.all(labels.sum(axis=1) == 1)
    originals = {x[i].tobytes() for i in range(40)}
    for img in images.numpy():
        assert np.round(img * 255).astype(np.uint8).tobytes() in originals


def _baseline_epochs(data_dir, tmp_path, *flags, epochs=2):
    """The training batches train.py's own create_data gives a --no_cutmix run (8 per batch), per epoch:
    ([uint8 images of epoch 0, ...], [labels of epoch 0, ...]) and the data's arrays."""
    import train
    from src import runtime
    args = train.parse_args([f"--data_dir={data_dir}", f"--output_path={tmp_path}", "--batch_size=8",
                             f"--epochs={epochs}", "--no_cutmix", *flags])
    ctx = runtime.Context(rank=0, world=1, arrays=runtime.check_inputs(args), out=tmp_path)
    data = train.create_data(args, ctx)
    batches = list(data.train(0))
    assert len(batches) == data.steps * epochs
    images, labels = [], []
    for e in range(epochs):
        part = batches[e * data.steps:(e + 1) * data.steps]
        images.append(np.round(np.concatenate([b[0].numpy() for b in part]) * 255).astype(np.uint8))
        labels.append(np.concatenate([b[1].numpy() for b in part]))
    return images, labels, ctx.arrays


def test_no_cutmix_feeds_the_training_set_in_file_order_every_epoch_as_keras_io(noise, tmp_path):
    # keras-io's baseline (train_ds_simple) is from_tensor_slices -> map -> batch: never shuffled
    images, labels, (x_train, y_train, *_) = _baseline_epochs(noise, tmp_path)
    for epoch_images, epoch_labels in zip(images, labels):
        np.testing.assert_array_equal(epoch_images, x_train)
        np.testing.assert_array_equal(epoch_labels, one_hot(y_train))


def test_shuffle_baseline_shuffles_each_epoch_differently(noise, tmp_path):
    images, labels, (x_train, y_train, *_) = _baseline_epochs(noise, tmp_path, "--shuffle_baseline")
    index = {x_train[i].tobytes(): i for i in range(len(x_train))}
    assert len(index) == len(x_train)  # noise images are distinct: each shown image names its source row
    orders = []
    for epoch_images, epoch_labels in zip(images, labels):
        order = [index[img.tobytes()] for img in epoch_images]
        assert sorted(order) == list(range(len(x_train)))  # every image once per epoch
        np.testing.assert_array_equal(epoch_labels, one_hot(y_train[order]))  # labels travel with their images
        orders.append(order)
    assert orders[0] != list(range(len(x_train))) and orders[0] != orders[1]


def test_shuffle_baseline_without_no_cutmix_is_refused(noise, tmp_path, capsys):
    import train
    with pytest.raises(SystemExit) as exc:
        train.parse_args([f"--data_dir={noise}", f"--output_path={tmp_path}", "--shuffle_baseline"])
    assert exc.value.code == 2 and "--shuffle_baseline: only with --no_cutmix" in capsys.readouterr().err
