import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, HealthCheck, example
from hypothesis import strategies as st

from common import cifar, safe_pickle
from common.cifar import DatasetError

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]
DIGITS = ROOT / "data" / "digits"


class Boom:
    """Unpickling this runs a shell command with the standard unpickler."""
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "data_batch_1"
    evil.write_bytes(pickle.dumps({"data": Boom(marker), "labels": [0]}, protocol=2))
    with pytest.raises(safe_pickle.UnsafePickleError) as exc:
        safe_pickle.load(evil)
    assert str(evil) in str(exc.value) and "refused" in str(exc.value)
    assert not marker.exists()
    # the standard unpickler would have run it: proves the test's payload is live
    pickle.loads(evil.read_bytes())
    assert marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_numpy_arrays_and_containers_round_trip(protocol):
    obj = {"data": np.arange(3072 * 2, dtype=np.uint8).reshape(2, 3072), "labels": [1, 2], "name": "x",
           "t": (1.5, None, True), "raw": b"\x00\xff"}
    out = safe_pickle.loads(pickle.dumps(obj, protocol=protocol))
    assert np.array_equal(out["data"], obj["data"]) and out["labels"] == [1, 2] and out["raw"] == b"\x00\xff"


def test_truncated_pickle_is_a_clear_error(tmp_path):
    p = tmp_path / "test_batch"
    p.write_bytes(pickle.dumps({"data": np.zeros((4, 3072), np.uint8), "labels": [0] * 4})[:100])
    with pytest.raises(safe_pickle.UnsafePickleError, match="corrupt or truncated"):
        safe_pickle.load(p)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_fuzz_restricted_unpickler_random_bytes(blob):
    try:
        safe_pickle.loads(blob, "fuzz")
    except safe_pickle.UnsafePickleError as exc:
        assert str(exc).startswith("fuzz")


# labels first, so the structure (labels, keys, dtype, shape) sits in the first ~250 bytes and the pixels after
GOOD_BATCH = pickle.dumps({"labels": [1, 2],
                           "data": np.arange(2 * 3072, dtype=np.uint64).astype(np.uint8).reshape(2, 3072)},
                          protocol=2)


def mutate(patch, pos):
    pos = pos % len(GOOD_BATCH)
    return GOOD_BATCH[:pos] + patch + GOOD_BATCH[pos + len(patch):]


def check_one_line_error_or_valid(path):
    """The claim: a CIFAR file either loads as valid images + labels or gives one DatasetError line naming it."""
    try:
        x, y = cifar.load_cifar10_batch(path)
    except DatasetError as exc:
        message = str(exc)
        assert message.startswith(str(path)) and "\n" not in message and len(message) < 300, message
        return "refused"
    assert x.dtype == np.uint8 and x.ndim == 4 and x.shape[1:] == (32, 32, 3)
    assert y.shape == (len(x),) and y.min() >= 0 and y.max() <= 9
    return "loaded"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=1, max_size=60), st.one_of(st.integers(0, 250), st.integers(0, len(GOOD_BATCH))))
@example(patch=b"l", pos=197)  # found by CI: numpy raised SystemError from the mutated dtype state
def test_fuzz_mutated_cifar_batch(tmp_path_factory, patch, pos):
    # any other exception type (or a crash) propagates and fails the test
    path = tmp_path_factory.mktemp("fuzz") / "data_batch_1"
    path.write_bytes(mutate(patch, pos))
    assert check_one_line_error_or_valid(path) in ("refused", "loaded")


def test_every_one_byte_change_of_the_structure_loads_valid_or_is_refused(tmp_path):
    # exhaustive where random search is thin: each byte of the labels/keys/dtype/shape region set to values that
    # make other valid opcodes and integers (e.g. a label 11 or 255, a shape of 0)
    path = tmp_path / "data_batch_1"
    outcomes = {"refused": 0, "loaded": 0}
    for pos in range(250):
        for value in (0x00, 0x0B, 0xFF, ord("K")):
            if GOOD_BATCH[pos] == value:
                continue
            path.write_bytes(GOOD_BATCH[:pos] + bytes([value]) + GOOD_BATCH[pos + 1:])
            outcomes[check_one_line_error_or_valid(path)] += 1
    assert outcomes["refused"] > 600 and outcomes["loaded"] > 0, outcomes


def test_mutated_cifar_files_end_a_process_with_one_error_line(tmp_path):
    # the same claim end to end: through common.cli, as every recipe's entry point loads CIFAR
    rng = np.random.default_rng(5)
    paths = []
    for i in range(12):
        path = tmp_path / f"batch_{i}"
        pos, size = int(rng.integers(0, len(GOOD_BATCH))), int(rng.integers(1, 40))
        path.write_bytes(mutate(rng.integers(0, 256, size, dtype=np.uint8).tobytes(), pos))
        paths.append(path)
    script = ("import sys\nfrom common import cli, cifar\n"
              "cli.run(lambda: [cifar.load_cifar10_batch(p) for p in sys.argv[1:]] and None, "
              "errors=(cifar.DatasetError,))\n")
    refused = 0
    for path in paths:
        proc = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True,
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        if proc.returncode == 0:
            cifar.load_cifar10_batch(path)  # loaded in the child: must load here too
            continue
        refused += 1
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr
        assert lines[0].startswith("ERROR: ") and str(path) in lines[0]
    assert refused >= 6  # random byte patches break most batches; a loader that accepts all would pass nothing


def need_digits():
    if not (DIGITS / "cifar-10-batches-py" / "test_batch").is_file():
        pytest.fail("data/digits missing: run `make data`")


def test_digits_cifar10_loads_with_expected_shapes_and_split():
    need_digits()
    xtr, ytr, xte, yte, names = cifar.load_cifar10(DIGITS)
    assert xtr.shape == (1497, 32, 32, 3) and xte.shape == (300, 32, 32, 3) and xtr.dtype == np.uint8
    assert set(np.unique(ytr)) == set(range(10)) and names[0] == "digit_0"
    assert xtr.max() == 255 and xtr.min() == 0


def test_digits_cifar100_has_fine_and_coarse_labels():
    need_digits()
    x, fine, coarse = cifar.load_cifar100(DIGITS / "cifar-100-python", "test")
    assert x.shape == (300, 32, 32, 3) and np.array_equal(coarse, fine // 5)
    fine_names, coarse_names = cifar.load_cifar100_meta(DIGITS)
    assert len(fine_names) == 100 and len(coarse_names) == 20


@pytest.mark.parametrize("sub", ["", "cifar-10-batches-py"])
def test_data_path_may_be_the_folder_or_its_parent(sub):
    need_digits()
    assert cifar.resolve_dir(DIGITS / sub if sub else DIGITS, "cifar-10-batches-py", "test_batch").name == "cifar-10-batches-py"


def test_ascend_layout_parent_dataset_folder(tmp_path):
    (tmp_path / "dataset" / "cifar-10-batches-py").mkdir(parents=True)
    (tmp_path / "dataset" / "cifar-10-batches-py" / "test_batch").write_bytes(b"x")
    assert cifar.resolve_dir(tmp_path, "cifar-10-batches-py", "test_batch").parent.name == "dataset"


def test_missing_data_path_names_it(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        cifar.load_cifar10(tmp_path / "nope")
    with pytest.raises(DatasetError, match="no cifar-10-batches-py dataset"):
        cifar.load_cifar10(tmp_path)


def _noise(tmp_path):
    out = tmp_path / "noise"
    subprocess.run([sys.executable, str(ROOT / "ci" / "make_data.py"), "--noise", "--out", str(out),
                    "--formats", "cifar10,cifar100"], check=True, capture_output=True)
    return out


def test_noise_builder_writes_loadable_cifar(tmp_path):
    out = _noise(tmp_path)
    xtr, ytr, xte, yte, _ = cifar.load_cifar10(out)
    assert xtr.shape == (100, 32, 32, 3) and xte.shape == (20, 32, 32, 3)
    x, fine, _ = cifar.load_cifar100(out, "train")
    assert len(x) == len(fine) == 100


def test_wrong_shape_and_bad_labels_are_reported_with_the_file(tmp_path):
    out = _noise(tmp_path)
    f = out / "cifar-10-batches-py" / "data_batch_3"
    f.write_bytes(pickle.dumps({"data": np.zeros((5, 1024), np.uint8), "labels": [0] * 5}))
    with pytest.raises(DatasetError, match=r"data_batch_3: 'data' must be a uint8 array of shape \(N, 3072\)"):
        cifar.load_cifar10(out)
    f.write_bytes(pickle.dumps({"data": np.zeros((5, 3072), np.uint8), "labels": [0, 1, 2, 3, 12]}))
    with pytest.raises(DatasetError, match="data_batch_3: label out of range"):
        cifar.load_cifar10(out)
    f.write_bytes(pickle.dumps({"data": np.zeros((5, 3072), np.uint8), "labels": [0, 1]}))
    with pytest.raises(DatasetError, match="data_batch_3: 2 labels for 5 images"):
        cifar.load_cifar10(out)


def test_truncated_cifar_file_is_reported_with_the_file(tmp_path):
    out = _noise(tmp_path)
    f = out / "cifar-10-batches-py" / "test_batch"
    f.write_bytes(f.read_bytes()[:5000])
    with pytest.raises(DatasetError, match="test_batch: corrupt or truncated"):
        cifar.load_cifar10(out)
