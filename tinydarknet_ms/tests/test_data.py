"""The loader on real-format folders (digits built by `make data`, noise built by ci/make_data.py --noise)
and the handling of bad image files."""
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from common.imagefolder import ImageFolderError
from conftest import ROOT
from src.dataset import create_dataset_imagenet, epoch_order, find_split, load_samples


def _batches(data):
    return [(img.asnumpy(), lab.asnumpy()) for img, lab in data.create_tuple_iterator(num_epochs=1)]


def test_digits_train_batches_have_the_train_shape(digits):
    samples, classes = load_samples(find_split(digits.parent, "train"))
    assert len(samples) == 1497 and len(classes) == 10
    batches = _batches(create_dataset_imagenet(samples, True, 32, 48, max_steps=2, num_parallel_workers=1))
    assert len(batches) == 2
    img, lab = batches[0]
    assert img.shape == (32, 3, 48, 48) and img.dtype == np.float32 and lab.dtype == np.int32
    assert 0 <= lab.min() and lab.max() < 10
    assert abs(float(img.mean())) < 3  # normalised, not 0..255


def test_eval_pipeline_keeps_every_image_in_order(digits):
    samples, _ = load_samples(find_split(digits, "val"))
    batches = _batches(create_dataset_imagenet(samples, False, 128, 32, num_parallel_workers=1))
    assert [b[0].shape[0] for b in batches] == [128, 128, 44]
    assert np.concatenate([b[1] for b in batches]).tolist() == [s[1] for s in samples]


def test_noise_imagenet_folder_from_make_data(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "ci" / "make_data.py"), "--noise", "--out", str(tmp_path),
                    "--n_train", "40", "--n_test", "10", "--formats", "imagenet"], check=True,
                   capture_output=True, timeout=120)
    samples, classes = load_samples(find_split(tmp_path, "train"))
    assert len(samples) >= 40 and len(classes) >= 2
    batches = _batches(create_dataset_imagenet(samples, True, 8, 32, max_steps=1, num_parallel_workers=1))
    assert batches[0][0].shape == (8, 3, 32, 32)


class TestEpochOrder:
    def test_same_seed_and_epoch_give_the_same_order(self):
        assert (epoch_order(100, True, 1, 3) == epoch_order(100, True, 1, 3)).all()
        assert not (epoch_order(100, True, 1, 3) == epoch_order(100, True, 1, 4)).all()

    def test_ranks_get_disjoint_equal_shares(self):
        shares = [epoch_order(10, True, 1, 0, rank, 4) for rank in range(4)]
        assert {len(s) for s in shares} == {3}
        assert len(set(np.concatenate(shares).tolist())) == 10  # all covered, 2 repeated to even out


@pytest.fixture
def tiny_folder(tmp_path, digits):
    root = tmp_path / "train"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i, f in enumerate(sorted((digits / "train" / "n09000000").iterdir())[:3]):
            (root / c / f"{i}.JPEG").write_bytes(f.read_bytes())
    return root


@pytest.mark.parametrize("kind", ["truncated", "zero_byte", "png_named_jpeg", "garbage"])
def test_bad_image_stops_with_its_path(tiny_folder, kind):
    bad = tiny_folder / "b" / "bad.JPEG"
    good = (tiny_folder / "a" / "0.JPEG").read_bytes()
    if kind == "truncated":
        bad.write_bytes(good[: len(good) // 2])
    elif kind == "zero_byte":
        bad.write_bytes(b"")
    elif kind == "png_named_jpeg":
        Image.new("RGB", (8, 8)).save(bad, format="PNG")
    else:
        bad.write_bytes(b"not an image at all" * 10)
    with pytest.raises(ImageFolderError) as exc:
        load_samples(tiny_folder, workers=2)
    assert str(bad) in str(exc.value) and "\n" not in str(exc.value)


def test_skip_bad_images_reports_each_and_keeps_the_rest(tiny_folder):
    (tiny_folder / "a" / "z.JPEG").write_bytes(b"")
    (tiny_folder / "b" / "z.JPEG").write_bytes(b"xx")
    lines = []
    samples, _ = load_samples(tiny_folder, skip_bad=True, workers=2, log=lines.append)
    assert len(samples) == 6
    assert sum("skipping bad image" in line for line in lines) == 2 and "skipped 2" in lines[-1]


def test_cmyk_and_grayscale_jpegs_decode(tiny_folder):
    Image.new("CMYK", (20, 20), (10, 200, 30, 0)).save(tiny_folder / "a" / "cmyk.JPEG", format="JPEG")
    Image.new("L", (20, 20), 128).save(tiny_folder / "b" / "gray.JPEG", format="JPEG")
    samples, _ = load_samples(tiny_folder)
    batches = _batches(create_dataset_imagenet(samples, False, 8, 16, num_parallel_workers=1))
    assert sum(b[0].shape[0] for b in batches) == 8 and batches[0][0].shape[1:] == (3, 16, 16)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ImageFolderError, match="does not exist"):
        find_split(tmp_path / "nope", "train")
