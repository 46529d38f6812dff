"""CIFAR-10 input: real-format files (digits, noise), batching as the original, opt-in augmentation, bad inputs."""
import pickle
import shutil

import numpy as np
import pytest

import train
import utils
from common.cifar import DatasetError
from conftest import python


def test_digits_load_as_raw_pixels_and_one_hot(digits):
    x_tr, y_tr, x_te, y_te = utils.load_cifar(digits / "cifar-10-batches-py")
    assert x_tr.shape == (1497, 32, 32, 3) and x_te.shape == (300, 32, 32, 3)
    assert x_tr.dtype == np.uint8 and x_tr.max() > 200  # never rescaled: the network sees 0-255
    assert y_tr.shape == (1497, 10) and np.all(y_tr.sum(1) == 1) and len(np.unique(y_tr.argmax(1))) == 10


def test_data_path_may_be_the_parent_folder(digits, noise):
    assert utils.load_cifar(digits)[0].shape[0] == 1497
    x_tr, y_tr, x_te, _ = utils.load_cifar(noise)
    assert x_tr.shape == (48, 32, 32, 3) and x_te.shape == (32, 32, 32, 3)


def test_batches_drop_the_remainder_and_shuffle_once():
    batches = utils.random_batch(100, 16, np.random.RandomState(3))
    assert len(batches) == 6 and all(len(b) == 16 for b in batches)
    flat = np.concatenate(batches)
    assert len(np.unique(flat)) == 96 and not np.array_equal(flat, np.sort(flat))


def test_eval_batches_are_the_same_every_time():
    a, b = utils.eval_batches(300, 64), utils.eval_batches(300, 64)
    assert len(a) == 4 and all(np.array_equal(p, q) for p, q in zip(a, b))


def test_too_few_images_for_one_batch_is_an_error():
    with pytest.raises(DatasetError, match="cannot fill one batch"):
        utils.random_batch(10, 16, np.random.RandomState(0))


def test_augment_crops_and_flips_deterministically():
    x = np.random.RandomState(0).randint(0, 256, (8, 32, 32, 3)).astype(np.uint8)
    a, b = utils.augment(x, np.random.RandomState(5)), utils.augment(x, np.random.RandomState(5))
    assert a.shape == x.shape and a.dtype == np.uint8 and np.array_equal(a, b) and not np.array_equal(a, x)


def test_pickle_that_would_run_code_is_refused(tmp_path, noise):
    bad = tmp_path / "cifar-10-batches-py"
    shutil.copytree(noise / "cifar-10-batches-py", bad)
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))
    (bad / "data_batch_2").write_bytes(pickle.dumps({"data": Exploit()}))
    with pytest.raises(DatasetError, match="data_batch_2"):
        utils.load_cifar(bad)
    assert not marker.exists()


def _break(tmp_path, noise, fault):
    """A copy of the noise dataset with one fault; returns (data path, the name the error must give)."""
    data = tmp_path / "cifar-10-batches-py"
    if fault == "missing":
        return tmp_path / "nowhere", "nowhere"
    shutil.copytree(noise / "cifar-10-batches-py", data)
    f = data / "data_batch_3"
    if fault == "truncated":
        f.write_bytes(f.read_bytes()[:1000])
    else:
        with open(f, "wb") as fh:
            pickle.dump({"data": np.zeros((10, 1024), np.uint8), "labels": [0] * 10}, fh)
    return data, "data_batch_3"


def test_bad_dataset_ends_the_process_with_one_line_error(tmp_path, noise):
    data, name = _break(tmp_path, noise, "truncated")
    rc, _, err = python("train.py", f"--data_path={data}", f"--output_path={tmp_path / 'out'}", "--epochs=1",
                        "--batch_size=16", check=False, timeout=300)
    lines = [line for line in err.strip().splitlines() if line.startswith("ERROR")]
    assert rc == 2 and len(lines) == 1 and name in lines[0], err[-2000:]
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("fault", ["missing", "wrong_shape"])
def test_bad_dataset_error_names_the_file_before_anything_is_written(tmp_path, noise, fault):
    # the same main() as above, in this process: it must fail while reading the data, before any graph or file
    data, name = _break(tmp_path, noise, fault)
    with pytest.raises(DatasetError, match=name):
        train.main([f"--data_path={data}", f"--output_path={tmp_path / 'out'}", "--epochs=1", "--batch_size=16",
                    "--device=cpu"])
    assert not (tmp_path / "out").exists()
