"""CIFAR-10 / CIFAR-100 python-format readers (untrusted input: every file goes through ``safe_pickle``).

Images come back as uint8 NHWC arrays (the files store rows of 3072 bytes in CHW order).
``--data_path`` may name the dataset folder itself or a parent of it (``<p>/cifar-10-batches-py`` or
``<p>/dataset/cifar-10-batches-py``, the latter being where the Ascend CSPNet script looked).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import safe_pickle


class DatasetError(ValueError):
    pass


CIFAR10_DIR, CIFAR100_DIR = "cifar-10-batches-py", "cifar-100-python"
CIFAR10_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR10_FILES = CIFAR10_TRAIN + ["test_batch", "batches.meta"]
CIFAR100_FILES = ["train", "test", "meta"]


def resolve_dir(path, folder: str, marker: str) -> Path:
    """Find ``folder`` at ``path`` itself, ``path/folder`` or ``path/dataset/folder``."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DatasetError(f"{p}: data path does not exist")
    for cand in (p, p / folder, p / "dataset" / folder):
        if (cand / marker).is_file():
            return cand
    raise DatasetError(f"{p}: no {folder} dataset found here (expected {marker} in it, in {folder}/ or dataset/{folder}/)")


def _images(data, path, key="data") -> np.ndarray:
    if not isinstance(data, dict) or key not in data:
        raise DatasetError(f"{path}: not a CIFAR batch (no '{key}' entry)")
    x = data[key]
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
        shape = getattr(x, "shape", None)
        dtype = getattr(x, "dtype", type(x).__name__)
        raise DatasetError(f"{path}: '{key}' must be a uint8 array of shape (N, 3072), got {dtype} {shape}")
    return x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def _labels(data, path, key, n, num_classes) -> np.ndarray:
    if key not in data:
        raise DatasetError(f"{path}: no '{key}' entry")
    try:
        y = np.asarray(data[key], dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise DatasetError(f"{path}: '{key}' is not a list of integers") from None
    if y.ndim != 1 or len(y) != n:
        raise DatasetError(f"{path}: {len(y) if y.ndim == 1 else y.shape} labels for {n} images")
    if n and (y.min() < 0 or y.max() >= num_classes):
        raise DatasetError(f"{path}: label out of range 0..{num_classes - 1} (found {y.min()}..{y.max()})")
    return y


def _load(path):
    try:
        return safe_pickle.load(path)
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except safe_pickle.UnsafePickleError as exc:
        raise DatasetError(str(exc)) from None


def load_cifar10_batch(path):
    data = _load(path)
    x = _images(data, path)
    return x, _labels(data, path, "labels", len(x), 10)


def load_cifar10(path):
    """Returns ``(x_train, y_train, x_test, y_test, label_names)``; x are uint8 NHWC."""
    root = resolve_dir(path, CIFAR10_DIR, "test_batch")
    parts = [load_cifar10_batch(root / f) for f in CIFAR10_TRAIN]
    x_test, y_test = load_cifar10_batch(root / "test_batch")
    names = [f"class_{i}" for i in range(10)]
    if (root / "batches.meta").is_file():
        meta = _load(root / "batches.meta")
        if isinstance(meta, dict) and isinstance(meta.get("label_names"), list):
            names = [str(n) for n in meta["label_names"]]
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), x_test, y_test, names)


def load_cifar100(path, split: str):
    """Returns ``(x, fine_labels, coarse_labels)`` for ``split`` in {'train', 'test'}."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = resolve_dir(path, CIFAR100_DIR, "meta")
    f = root / split
    data = _load(f)
    x = _images(data, f)
    return x, _labels(data, f, "fine_labels", len(x), 100), _labels(data, f, "coarse_labels", len(x), 20)


def load_cifar100_meta(path):
    root = resolve_dir(path, CIFAR100_DIR, "meta")
    meta = _load(root / "meta")
    if not isinstance(meta, dict) or not isinstance(meta.get("fine_label_names"), list):
        raise DatasetError(f"{root / 'meta'}: no 'fine_label_names' list")
    return [str(n) for n in meta["fine_label_names"]], [str(n) for n in meta.get("coarse_label_names", [])]
