"""What this recipe adds to the installed mmcls 0.25 / mmcv 1.7 (registered on import).

- ``datasets``: ``CIFAR100Local``, CIFAR-100 pickles through ``common``'s restricted unpickler;
- ``checkpoint``: checkpoints read with ``torch.load(weights_only=True)`` (also behind mmcv's loader)
  and written atomically;
- ``runner``: ``ZooEpochBasedRunner`` (atomic saves, safe resume, autocast, no epoch-transition sleep);
- ``hooks``: per-epoch reseeding, AMP optimiser step, steady-state throughput, summary CSV/PNG, progress;
- ``device`` / ``parallel``: device auto-detection and model wrapping that also works on CPU.
"""
from . import checkpoint, datasets, hooks, runner  # noqa: F401  (registration side effects)
