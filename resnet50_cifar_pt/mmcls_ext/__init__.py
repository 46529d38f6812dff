"""What this recipe adds to the installed mmcls 0.25 / mmcv 1.7 (registered on import).

- ``datasets``: ``CIFAR100Local``, CIFAR-100 pickles through ``common``'s restricted unpickler;
- ``checkpoint``: checkpoints read with ``torch.load(weights_only=True)`` (also behind mmcv's loader)
  and written atomically;
- ``runner``: ``ZooEpochBasedRunner`` (``train_one_epoch``, atomic saves with a ``checkpoint`` event, safe
  resume, autocast and loss scaler as constructor arguments, no epoch-transition sleep);
- ``hooks``: per-epoch reseeding, AMP optimiser step, ``validate`` (the eval hook), steady-state throughput,
  summary CSV/PNG, progress, the ``initial_weights`` / ``step`` events;
- ``device`` / ``parallel``: device auto-detection, model wrapping that also works on CPU, the weight digest;
- ``training`` / ``report`` / ``cli``: the plumbing behind tools/train.py's steps, its run-record extras, and
  what the three entry points share (config loading, the errors that exit 2).
"""
from . import checkpoint, datasets, hooks, runner  # noqa: F401  (registration side effects)
