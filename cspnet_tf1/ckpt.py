"""Atomic Saver checkpoints with resume metadata.

Every save goes to ``<output>/ckpt/step_<global step>/`` (Saver files + ``state.json``), written in a temporary
folder and renamed, so a kill during a save leaves the previous checkpoint intact. The newest one is then
linked to ``<output>/cspdarknet53.ckpt.*``, the path the original train.py/test.py and the ACL freeze script
use. The two newest step folders are kept. "Newest" is the global step in the folder name, never a file time
(a copied or restored folder keeps or gets any mtime).

With ``--rank_checkpoints`` every rank also writes its final variables to ``<output>/rank_<r>/final/`` (a Saver
checkpoint, no ``state.json``): not a resume point, a copy of each rank's state to compare across ranks.
"""
import json
import os
import re
from pathlib import Path

import tensorflow as tf

from common.checkpoint import CheckpointError, atomic_write_dir, atomic_write_text, latest_valid, remove_stale_temps

CKPT_NAME = "cspdarknet53.ckpt"
FINAL_DIR = "final"
KEEP = 2
_STEP_DIR = re.compile(r"^step_\d+$")


def _bundle_files(prefix):
    prefix = Path(prefix)
    return sorted(p for p in prefix.parent.glob(prefix.name + ".*") if not p.name.endswith(".tmp"))


def save(sess, saver, out, epoch, global_step, seed, batch_size, val_accuracy, rank_size=1, eval_batch_size=None):
    """Save the session's variables; returns the Saver prefix in the new step folder (complete on disk, and
    linked to ``<output>/cspdarknet53.ckpt``, when this returns)."""
    out = Path(out)
    folder = out / "ckpt" / f"step_{global_step:09d}"
    state = {"epoch": epoch, "global_step": int(global_step), "seed": seed, "batch_size": batch_size,
             "rank_size": rank_size, "eval_batch_size": eval_batch_size or batch_size, "val_accuracy": val_accuracy}

    def write(tmp):
        saver.save(sess, os.path.join(tmp, CKPT_NAME), write_state=False)
        Path(tmp, "state.json").write_text(json.dumps(state, indent=1))
    atomic_write_dir(folder, write)

    # hard links: the copy at the original's path costs no extra disk and each file is replaced atomically
    for src in _bundle_files(folder / CKPT_NAME):
        tmp = out / f".{src.name}.{os.getpid()}.tmp"
        try:
            os.link(src, tmp)
        except OSError:
            tmp.write_bytes(src.read_bytes())
        os.replace(tmp, out / src.name)
    atomic_write_text(out / "checkpoint", f'model_checkpoint_path: "{CKPT_NAME}"\n'
                                           f'all_model_checkpoint_paths: "{CKPT_NAME}"\n')
    for old in sorted(p for p in (out / "ckpt").iterdir() if _STEP_DIR.match(p.name))[:-KEEP]:
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    return folder / CKPT_NAME


def save_final(sess, saver, folder):
    """All of the session's variables as they are now, atomically in ``folder``; returns the Saver prefix."""
    atomic_write_dir(folder, lambda tmp: saver.save(sess, os.path.join(tmp, CKPT_NAME), write_state=False,
                                                    write_meta_graph=False))
    return Path(folder) / CKPT_NAME


def _step_of(folder):
    return int(folder.name.split("_", 1)[1])


def check(prefix):
    """Read every tensor of a Saver checkpoint (the reader verifies checksums); raises if unreadable."""
    reader = tf.train.load_checkpoint(str(prefix))
    for name in reader.get_variable_to_shape_map():
        reader.get_tensor(name)
    return reader


def _load_state(folder):
    prefix = folder / CKPT_NAME
    check(prefix)
    try:
        state = json.loads((folder / "state.json").read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{folder / 'state.json'}: unreadable ({exc})") from None
    return {**state, "prefix": str(prefix)}


def find_resume(spec, out, log=print):
    """Resume point for ``--resume``: 'auto', a step folder, or any Saver prefix. None when auto finds nothing."""
    if spec == "auto":
        root = Path(out) / "ckpt"
        for folder in (root, Path(out)):  # temp folders and links of saves that a kill cut short
            remove_stale_temps(folder, log=log)
        folders = [p for p in root.iterdir() if _STEP_DIR.match(p.name)] if root.is_dir() else []
        best = latest_valid(folders, lambda f: bool(_load_state(f)), log=log, key=_step_of)
        if best is None:
            log(f"resume: no valid checkpoint in {root}, starting from scratch")
            return None
        return _load_state(best)
    path = Path(spec)
    if path.is_dir() and (path / "state.json").is_file():
        return _load_state(path)
    if path.is_dir():
        path = path / CKPT_NAME
    if not Path(str(path) + ".index").is_file():
        raise CheckpointError(f"{path}: no checkpoint here (expected {path.name}.index)")
    try:
        check(path)
    except Exception as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(exc).__name__})") from None
    state_file = path.parent / "state.json"
    if not state_file.is_file():
        state_file = _linked_state(path)
    state = json.loads(state_file.read_text()) if state_file and state_file.is_file() else {}
    return {**state, "prefix": str(path)}


def _linked_state(prefix):
    """The ``state.json`` of the step folder whose files ``prefix`` (the original's path,
    ``<output>/cspdarknet53.ckpt``) hard-links, so that resuming from that path is checked as the step folder
    is (rank count, seed); None for a copy or a checkpoint from elsewhere, which carries no metadata."""
    index, root = Path(str(prefix) + ".index"), Path(prefix).parent / "ckpt"
    if not root.is_dir():
        return None
    for folder in root.iterdir():
        other = folder / (CKPT_NAME + ".index")
        try:
            if _STEP_DIR.match(folder.name) and os.path.samefile(index, other):
                return folder / "state.json"
        except OSError:
            continue
    return None
