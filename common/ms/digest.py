"""The weight digest of a MindSpore Cell and the ``initial_weights`` event."""
from __future__ import annotations

from typing import Optional

from common import events
from common.digest import weights_digest


def cell_digest(cell) -> str:
    """``common.digest.weights_digest`` of ``cell.trainable_params()`` in the Cell's own (definition) order."""
    return weights_digest(p.asnumpy() for p in cell.trainable_params())


def emit_initial_weights(events_dir, cell, rank: Optional[int] = None) -> str:
    """Emit ``initial_weights`` {digest} into ``<events_dir>/events.jsonl`` (skipped when ``events_dir`` is None,
    as in the bench); returns the digest, for the human log line."""
    digest = cell_digest(cell)
    if events_dir is not None:
        events.emit(events_dir, "initial_weights", rank=rank, digest=digest)
    return digest
