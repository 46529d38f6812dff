"""Loader on real-format files, and bad inputs: one-line error naming the file, non-zero exit, nothing written."""
import pickle
import shutil

import numpy as np
import pytest

from common import cli
from conftest import RECIPE, run, train_cmd
from src.data import load_arrays, one_hot, shard


def test_loads_the_digits_in_cifar10_format(digits):
    x_train, y_train, x_test, y_test, names = load_arrays(digits)
    assert x_train.shape == (1497, 32, 32, 3) and x_test.shape == (300, 32, 32, 3)
    assert x_train.dtype == np.uint8 and set(np.unique(y_train)) == set(range(10))
    assert len(names) == 10
    # the parent folder and the dataset folder itself both work
    assert load_arrays(digits / "cifar-10-batches-py")[0].shape == x_train.shape


def test_loads_noise_data_of_the_same_format(noise):
    x_train, y_train, x_test, _, _ = load_arrays(noise)
    assert x_train.shape == (64, 32, 32, 3) and x_test.shape == (16, 32, 32, 3)
    assert one_hot(y_train).shape == (64, 10)


def test_shards_are_disjoint_and_cover_the_data():
    x = np.arange(10)
    parts = [shard(x, x, i, 3)[0] for i in range(3)]
    assert sorted(np.concatenate(parts).tolist()) == list(range(10))


def _copy(noise, tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    shutil.copytree(noise / "cifar-10-batches-py", d)
    return d


def _fails_cleanly(args, needle, tmp_path):
    out = tmp_path / "out"
    proc = run(train_cmd(*args, f"--output_path={out}"))
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ERROR:"), proc.stderr
    assert needle in lines[0]
    assert not out.exists()  # nothing half-written
    return lines[0]


def test_missing_data_path(tmp_path):
    _fails_cleanly([f"--data_dir={tmp_path / 'nowhere'}"], "nowhere", tmp_path)


def test_truncated_batch_file(noise, tmp_path):
    d = _copy(noise, tmp_path)
    f = d / "data_batch_3"
    f.write_bytes(f.read_bytes()[:5000])
    _fails_cleanly([f"--data_dir={d}"], "data_batch_3", tmp_path)


def test_wrong_image_shape(noise, tmp_path):
    d = _copy(noise, tmp_path)
    with open(d / "test_batch", "wb") as fh:
        pickle.dump({"data": np.zeros((16, 1024), np.uint8), "labels": [0] * 16}, fh, protocol=4)
    msg = _fails_cleanly([f"--data_dir={d}"], "test_batch", tmp_path)
    assert "(N, 3072)" in msg


def test_pickle_that_would_run_code_is_refused(noise, tmp_path):
    d = _copy(noise, tmp_path)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))
    with open(d / "data_batch_1", "wb") as fh:
        pickle.dump(Evil(), fh)
    _fails_cleanly([f"--data_dir={d}"], "data_batch_1", tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize("args, needle", [
    (["--epochs=0"], "--epochs"),
    (["--eval_static=maybe"], "--eval_static"),
    (["--device=tpu"], "--device"),
    (["--bogus_flag=1"], "--bogus_flag"),
])
def test_nonsense_flags_are_refused(args, needle, digits, tmp_path):
    proc = run(train_cmd(f"--data_dir={digits}", f"--output_path={tmp_path / 'out'}", *args))
    assert proc.returncode == 2 and needle in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists()


def test_shell_script_requires_data_path_and_a_known_device(digits):
    proc = run(["bash", RECIPE / "test" / "train_full_1p.sh"])
    assert proc.returncode == 2 and "--data_path" in proc.stderr
    proc = run(["bash", RECIPE / "test" / "train_full_1p.sh", f"--data_path={digits}", "--device=tpu"])
    assert proc.returncode == 2 and "--device" in proc.stderr


@pytest.mark.parametrize("flag", ["--over_dump=True", "--profiling=True", "--use_mixlist=True"])
def test_npu_debugging_flags_are_refused_off_npu(flag, noise, tmp_path, capsys):
    import train
    rc = cli.guard(train.main, [f"--data_dir={noise}", f"--output_path={tmp_path / 'out'}", "--device=cpu", flag],
                   errors=train.ERRORS)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and flag.split("=")[0] in err[0] and "no effect on cpu" in err[0]
    assert not (tmp_path / "out").exists()
