"""Loader on real-format files: the digits JPEG folders, the noise builder's folders, and broken images."""
import shutil
import sys

import numpy as np
import pytest
from PIL import Image

from common.imagefolder import ImageFolderError
from src.dataset import _Reader, create_dataset_imagenet, load_split, second_size

from conftest import ROOT, digits_imagenet


def test_digits_folders_load_with_sorted_classes():
    train, classes = load_split(digits_imagenet(), 'train', vet=False)
    val, val_classes = load_split(digits_imagenet().parent, 'val', vet=False)  # parent folder works too
    assert (len(train), len(val), len(classes)) == (1497, 300, 10) and classes == val_classes == sorted(classes)


@pytest.mark.parametrize('model,training,size,resize_to', [('sppnet_single', True, 64, None),
                                                           ('sppnet_mult', True, 64, 51),
                                                           ('zfnet', False, 56, None)])
def test_pipeline_batches_are_normalised_chw_float_and_int32_labels(model, training, size, resize_to):
    samples, _ = load_split(digits_imagenet(), 'val', vet=False)
    data = create_dataset_imagenet(samples[:40], 16, model, training, size, resize_to=resize_to, workers=2)
    batches = list(data.create_tuple_iterator(output_numpy=True))
    side = resize_to or size
    assert len(batches) == (2 if training else 3)  # training drops the remainder, evaluation keeps it
    image, label = batches[0]
    assert image.shape == (16, 3, side, side) and image.dtype == np.float32 and label.dtype == np.int32
    assert -2.2 < image.min() < 0 < image.max() < 2.7  # ImageNet mean/std on 0-255 pixels


def test_steps_repeat_a_small_dataset():
    samples, _ = load_split(digits_imagenet(), 'val', vet=False)
    data = create_dataset_imagenet(samples[:20], 8, 'zfnet', True, 56, steps=5, workers=1)
    assert data.get_dataset_size() == 5


def test_second_size_keeps_the_original_ratio():
    assert second_size(224) == 180 and second_size(64) == 51


def test_noise_builder_folders_load_and_vet(noise_imagenet):
    train, classes = load_split(noise_imagenet, 'train')
    assert len(train) == 40 and len(classes) == 10


def _broken_copy(noise_imagenet, tmp_path, how):
    root = tmp_path / 'data'
    shutil.copytree(noise_imagenet, root)
    victim = sorted((root / 'train').rglob('*.JPEG'))[3]
    if how == 'truncated':
        victim.write_bytes(victim.read_bytes()[:200])
    elif how == 'zero':
        victim.write_bytes(b'')
    elif how == 'png':
        Image.open(victim).save(victim, format='PNG')
    return root, victim


@pytest.mark.parametrize('how', ['truncated', 'zero', 'png'])
def test_bad_image_stops_with_its_path_or_is_skipped(noise_imagenet, tmp_path, how):
    root, victim = _broken_copy(noise_imagenet, tmp_path, how)
    with pytest.raises(ImageFolderError, match=str(victim)):
        load_split(root, 'train')
    logged = []
    good, _ = load_split(root, 'train', skip_bad=True, log=logged.append)
    assert len(good) == 39 and any(str(victim) in line for line in logged)


@pytest.mark.parametrize('how', ['truncated', 'zero'])
def test_reader_names_the_file_when_vetting_was_off(noise_imagenet, tmp_path, how):
    root, victim = _broken_copy(noise_imagenet, tmp_path, how)
    samples, _ = load_split(root, 'train', vet=False)
    reader = _Reader(samples)
    with pytest.raises(ImageFolderError, match=str(victim)):
        reader[[s for s, _ in samples].index(str(victim))]
    good = reader[[s for s, _ in samples].index(str(victim)) - 1][0]
    assert good.dtype == np.uint8 and bytes(good[:2]) == b'\xff\xd8'  # encoded bytes: MindSpore decodes them


def test_random_header_damage_never_crashes_mindspore_past_the_check():
    """ci/jpeg_fuzz.py on 60 files: some crash MindSpore's decoder (so the test sees the danger it guards
    against), and every one of those is refused by the readers' check (common.imagefolder.encoded_problem)."""
    import subprocess
    proc = subprocess.run([sys.executable, str(ROOT / 'ci' / 'jpeg_fuzz.py'), '--count=60', '--seed=0'],
                          capture_output=True, text=True, timeout=600)
    crashed = int(proc.stdout.split('crashed MindSpore: ')[1].split(';')[0])
    assert proc.returncode == 0 and crashed >= 3, proc.stdout + proc.stderr[-2000:]
    assert proc.stdout.rstrip().endswith('of those passed by the check: 0')


def test_a_file_that_is_no_image_is_named_by_the_reader(tmp_path):
    path = tmp_path / 'notes.JPEG'
    path.write_text('not an image')
    with pytest.raises(ImageFolderError, match=f'{path}: cannot decode'):
        _Reader([(str(path), 0)])[0]


def test_cmyk_and_grayscale_jpegs_decode_to_rgb(tmp_path):
    """Uniform images, so resizing keeps the pixel: each comes out as the three channels of Pillow's RGB
    conversion, normalised, through the evaluation pipeline (MindSpore's Decode) and the training one
    (RandomCropDecodeResize)."""
    from src.dataset import MEAN, STD
    for mode, colour in (('CMYK', (10, 20, 30, 40)), ('L', 90)):
        path = tmp_path / f'{mode}.JPEG'
        Image.new(mode, (20, 10), colour).save(path, format='JPEG', quality=100)
        with Image.open(path) as im:
            rgb = np.asarray(im.convert('RGB'), np.float32)[5, 10]
        expected = (rgb - np.array(MEAN)) / np.array(STD)
        for training in (False, True):
            data = create_dataset_imagenet([(str(path), 3)], 1, 'zfnet', training, 8, workers=1)
            image, label = next(data.create_tuple_iterator(output_numpy=True))
            assert image.shape == (1, 3, 8, 8) and label.tolist() == [3]
            np.testing.assert_allclose(image[0, :, 4, 4], expected, atol=0.05)
