"""MindSpore helpers shared by ``sppnet_ms`` and ``tinydarknet_ms``: the one place of MindSpore-only code in common/.

Everything else in ``common/`` is framework-free and importable in every environment. This subpackage imports
MindSpore, so only the MindSpore environment imports it (the two MindSpore recipes, their tests and their bench
modules); no module in ``common/*.py`` may import ``common.ms``.

API (each name is documented where it is defined):

- :class:`StepMonitor` (``common.ms.monitor``): the ``Model.train`` callback of both recipes: per-step (or
  per-sink) timing into a ``ThroughputMeter``, the progress line ``epoch E step S [done/total] loss L ...``,
  the ``step`` event at the same cadence, and a non-finite loss raised as :class:`NonFiniteLossError`.
- :class:`CheckpointSeries` (``common.ms.checkpoint``): one run's epoch checkpoints in one folder, named by a
  pattern (``'zfnet-{epoch}.ckpt'``, ``'train_tinydarknet_imagenet-{epoch}_{step}.ckpt'``): atomic save that emits
  the ``checkpoint`` event, pruning to the newest N, ``--resume auto``'s search for the newest readable file.
- :func:`save_ckpt`, :func:`load_ckpt`, :func:`load_into`, :func:`meta_value`: single checkpoint files
  (atomic, CRC-checked writes; one-line :class:`common.checkpoint.CheckpointError` for every bad file).
- :func:`agree_resume` (``common.ms.resume``): ``--resume auto`` of a job of one or several ranks: the ranks'
  checkpoint steps all-gathered (MindSpore ``AllGather``), ``common.resume.agree`` picks the newest step every
  rank holds, each rank loads its own file of it; a checkpoint of another rank count (``WORLD_KEY`` in its
  meta, written by a ``CheckpointSeries(world=...)``) is refused on every rank (``common.resume.check_world``).
- :class:`RankLog` (``common.ms.context``): ``primary`` and a rank-0-only ``log`` for a run context with ``rank``.
- :func:`cell_digest`, :func:`emit_initial_weights`: ``common.digest.weights_digest`` over a Cell's trainable
  parameters, and the ``initial_weights`` event.
"""
from .checkpoint import CheckpointSeries, load_ckpt, load_into, meta_value, save_ckpt
from .context import RankLog
from .digest import cell_digest, emit_initial_weights
from .monitor import NonFiniteLossError, StepMonitor

__all__ = ["CheckpointSeries", "NonFiniteLossError", "RankLog", "StepMonitor", "cell_digest", "emit_initial_weights",
           "load_ckpt", "load_into", "meta_value", "save_ckpt"]
