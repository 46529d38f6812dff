"""One digest of a model's weights, used by every recipe's tools and tests to say "the same weights"."""
from __future__ import annotations

import hashlib
from typing import Iterable

import numpy as np


def weights_digest(arrays: Iterable) -> str:
    """sha256 (16 hex digits) of the arrays as contiguous float32 bytes, in the given order.

    ``arrays`` are numpy arrays or anything ``np.asarray`` takes (a framework tensor after ``.numpy()``
    / ``.asnumpy()``). float32 so that a bf16/fp16 copy of the same values gives the same digest.
    """
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(np.asarray(a, dtype=np.float32)).tobytes())
    return h.hexdigest()[:16]


def file_digest(path) -> str:
    """sha256 (all 64 hex digits) of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
