"""Per-epoch training checkpoints: weights + optimiser state in a directory written atomically.

Each ``epoch_NNNN/`` holds a ``tf.train.Checkpoint`` and ``meta.json`` with the epoch and the size and
SHA-256 of every file, so a truncated or corrupt checkpoint is found without asking TensorFlow
(and before TensorFlow is even imported).

A worker of a multi-worker job also writes ``local.npz``: its own values of the variables that each replica
keeps for itself (``ON_READ``: BatchNorm's moving mean and variance, updated from the replica's own batches, no
SyncBN). ``tf.train.Checkpoint`` stores only their mean over the replicas, and restoring it gives every replica
that mean: the moving statistics, and the model saved at the end, then differ from an uninterrupted job's in the
last bits (issue #22: up to 1.9e-6). ``restore_local`` puts each replica's own values back.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from common.checkpoint import CheckpointError, atomic_write_dir, latest_valid
from common.digest import file_digest

PREFIX = "ckpt"
META = "meta.json"
LOCAL = "local.npz"
NAME = re.compile(r"epoch_(\d+)")


def _epoch_of(path) -> int:
    return int(NAME.fullmatch(Path(path).name).group(1))


def by_epoch(root) -> list:
    """The ``epoch_NNNN`` folders under ``root``, oldest first by the epoch in the name: never by modification
    time, which ties within a file system's time granularity and changes when a folder is copied."""
    return sorted((p for p in Path(root).glob("epoch_*") if NAME.fullmatch(p.name)), key=_epoch_of)


def build_optimizer_state(model) -> None:
    """Create the optimiser's slot variables now, so a restore fills them instead of deferring."""
    model.optimizer.build(model.trainable_variables)


def _on_read(model):
    """The model's variables each replica keeps for itself (``ON_READ``), in the model's order."""
    import tensorflow as tf

    return [v for v in model.weights if getattr(v, "synchronization", None) == tf.VariableSynchronization.ON_READ]


def local_state(model, strategy) -> dict:
    """This worker's own values of the per-replica variables, read without collectives (its one replica)."""
    state = {}
    for k, v in enumerate(_on_read(model)):
        parts = strategy.experimental_local_results(v)
        if len(parts) != 1:  # one device per worker is all the launcher starts
            raise CheckpointError(f"{v.name}: {len(parts)} local replicas on one worker; expected 1")
        state[f"{k:04d}"] = parts[0].numpy()
    return state


def restore_local(path, model, strategy) -> None:
    """Give this worker's replica back its own per-replica values from ``path``'s ``local.npz``."""
    import numpy as np

    path = Path(path)
    variables = _on_read(model)
    with np.load(path / LOCAL) as saved:
        if len(saved.files) != len(variables):
            raise CheckpointError(f"{path / LOCAL}: {len(saved.files)} per-replica variables, the model has "
                                  f"{len(variables)}")
        for k, v in enumerate(variables):
            value = saved[f"{k:04d}"]
            if tuple(value.shape) != tuple(v.shape):
                raise CheckpointError(f"{path / LOCAL}: {v.name} has shape {value.shape}, the model {tuple(v.shape)}")
            strategy.experimental_local_results(v)[0].assign(value)


def save(root, epoch: int, model, extra=None, keep: int = 2, local=None) -> Path:
    """``root/epoch_NNNN``; ``local``: this worker's ``local_state`` (a multi-worker job), kept as local.npz."""
    import numpy as np
    import tensorflow as tf

    root = Path(root)

    def write(tmp):
        tf.train.Checkpoint(model=model, optimizer=model.optimizer).write(os.path.join(tmp, PREFIX))
        if local is not None:
            with open(os.path.join(tmp, LOCAL), "wb") as fh:
                np.savez(fh, **local)
        files = {p.name: {"size": p.stat().st_size, "sha256": file_digest(p)} for p in sorted(Path(tmp).iterdir())}
        meta = {"epoch": epoch, "files": files, **(extra or {})}
        with open(os.path.join(tmp, META), "w") as fh:
            json.dump(meta, fh, indent=1)

    path = atomic_write_dir(root / f"epoch_{epoch:04d}", write)
    for old in by_epoch(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def read_meta(path) -> dict:
    path = Path(path)
    try:
        meta = json.loads((path / META).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: not a checkpoint (no {META})") from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path / META}: unreadable ({exc})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("epoch"), int) or not isinstance(meta.get("files"), dict):
        raise CheckpointError(f"{path / META}: malformed checkpoint metadata")
    return meta


def verify(path) -> dict:
    """The checkpoint's metadata, after checking every file's size and hash; CheckpointError if any differs."""
    path = Path(path)
    meta = read_meta(path)
    for name, want in meta["files"].items():
        f = path / name
        if not f.is_file():
            raise CheckpointError(f"{f}: missing from checkpoint")
        if f.stat().st_size != want.get("size") or file_digest(f) != want.get("sha256"):
            raise CheckpointError(f"{f}: truncated or corrupt (size/hash differ from {META})")
    return meta


def global_step(path, meta) -> int:
    """The optimiser's step count a checkpoint holds: from its metadata (older checkpoints: from the file)."""
    if isinstance(meta.get("global_step"), int):
        return meta["global_step"]
    import tensorflow as tf

    reader = tf.train.load_checkpoint(os.path.join(str(path), PREFIX))
    return int(reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"))


def valid_steps(root, log=print) -> dict:
    """{global step: folder} of the valid ``epoch_*`` checkpoints under ``root`` (an invalid one is reported)."""
    found = {}
    for p in by_epoch(root) if Path(root).is_dir() else []:
        try:
            found[global_step(p, verify(p))] = p
        except CheckpointError as exc:
            log(f"resume: skipping {p} ({exc})")
    return found


def find_latest(root, log=print):
    """The valid ``epoch_*`` checkpoint of the highest epoch under ``root`` (each invalid one newer than it is
    reported and skipped), or None."""
    root = Path(root)
    if not root.is_dir():
        return None
    return latest_valid(by_epoch(root), lambda p: verify(p) is not None, log=log, key=_epoch_of)


def restore(path, model) -> int:
    """Load weights and optimiser state from a checkpoint directory; returns the epochs it had completed."""
    import tensorflow as tf

    meta = verify(path)
    build_optimizer_state(model)
    status = tf.train.Checkpoint(model=model, optimizer=model.optimizer).read(os.path.join(str(path), PREFIX))
    status.assert_existing_objects_matched()
    return meta["epoch"]


def _kind(layer_name):
    """``conv2d_22`` -> ``conv2d``: the layer kind in a Keras automatic name, without its per-process number."""
    return re.sub(r"_\d+$", "", layer_name)


def _decode(values):
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def h5_kind(path):
    """``"weights"`` for a ``model.save_weights`` HDF5 file (no architecture in it), ``"model"`` for a whole
    ``model.save`` one, None for anything else (not HDF5, unreadable)."""
    import h5py

    try:
        with h5py.File(str(path), "r") as f:
            if "model_config" in f.attrs:
                return "model"
            return "weights" if "layer_names" in f.attrs else None
    except (OSError, ValueError):
        return None


def load_weights_h5(path, model) -> str:
    """Fill ``model`` from a ``save_weights`` HDF5 file; returns how: ``"name"`` or ``"order"``.

    By name when the file's layers with weights carry exactly the model's names (keras-io's fresh-session names,
    which src.model gives): every layer gets the group of its own name. A keras-io process numbers the layers of
    every model it builds after the first on (its trained model is ``conv2d_22``, ...), so a file whose names
    differ only in those numbers (the same layer kinds in the same order) is loaded by layer order, which is
    what Keras' own ``load_weights`` (and keras-io's reload of ``initial_weights.h5``) does. Anything else, or a
    weight of another shape, is refused: a weights file has no architecture to fall back on.
    """
    import h5py

    ours = [layer.name for layer in model.layers if layer.weights]
    try:
        with h5py.File(str(path), "r") as f:
            saved = [n for n in _decode(f.attrs["layer_names"])
                     if n in f and len(f[n].attrs.get("weight_names", [])) > 0]
    except (OSError, KeyError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable weights file ({exc})") from None
    if sorted(saved) == sorted(ours):
        by = "name"
    elif [_kind(n) for n in saved] == [_kind(n) for n in ours]:
        by = "order"
    else:
        diff = next((i for i, (a, b) in enumerate(zip(saved, ours)) if _kind(a) != _kind(b)),
                    min(len(saved), len(ours)))
        raise CheckpointError(f"{path}: not this recipe's ResNet-20 weights ({len(saved)} layers with weights, the "
                              f"model has {len(ours)}; layer {diff}: file "
                              f"{saved[diff] if diff < len(saved) else '-'}, model "
                              f"{ours[diff] if diff < len(ours) else '-'})")
    try:
        model.load_weights(str(path), by_name=by == "name")
    except ValueError as exc:  # a weight of another shape or count
        raise CheckpointError(f"{path}: {str(exc).splitlines()[0][:200]}") from None
    return by


def load_model(path, info=None):
    """A compiled Keras model from any of: ``model.h5`` (``model.save``), a weights-only HDF5 file
    (``model.save_weights``, e.g. keras-io's or the original's ``initial_weights.h5``: loaded into
    src.model's ResNet-20), a SavedModel folder, an ``epoch_NNNN`` checkpoint, or a training output folder (its
    ``model.h5``, else its newest valid checkpoint). ``info``: a dict that gets ``weights_loaded_by``
    (``"name"`` / ``"order"`` for a weights-only file, else None)."""
    import tf_keras as keras

    from src.model import compile_model, resnet_v1

    info = {} if info is None else info
    info["weights_loaded_by"] = None
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint path does not exist")
    if path.is_dir() and not (path / "saved_model.pb").is_file() and not (path / META).is_file():
        if (path / "model.h5").is_file():
            path = path / "model.h5"
        else:
            latest = find_latest(path / "checkpoints")
            if latest is None:
                raise CheckpointError(f"{path}: no model.h5, SavedModel or valid checkpoint in it")
            path = latest
    if path.is_dir() and (path / META).is_file():
        model = compile_model(resnet_v1())
        restore(path, model)
        return model, path
    if path.is_file() and h5_kind(path) == "weights":
        model = resnet_v1()
        info["weights_loaded_by"] = load_weights_h5(path, model)
        return compile_model(model), path
    try:
        model = keras.models.load_model(str(path), compile=False)
    except (OSError, ValueError, IOError) as exc:
        raise CheckpointError(f"{path}: cannot load model ({str(exc).splitlines()[0][:200]})") from None
    return compile_model(model), path
