"""MindSpore checkpoint files: atomic CRC-checked writes, one-line errors, and a run's series of epoch checkpoints.

MindSpore's own writer deletes a same-named file before it writes, and its ``ModelCheckpoint`` prunes the oldest
file before the new one exists, so a kill mid-save could leave no valid checkpoint. Here every file is written
beside its final name and renamed into place (``common.checkpoint.atomic_write``); older files go only after the
new one is complete, and only then is the ``checkpoint`` event emitted.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable, List, Optional

import mindspore as ms

from common import events
from common.checkpoint import CheckpointError, atomic_write, latest_valid, remove_stale_temps
from common.imagefolder import CLASSES_KEY, decode_classes, encode_classes

# what an optimiser checkpoint need not hold: they are rebuilt from the config (the LR schedule is a Tensor
# of the optimiser, its position is global_step, which is saved)
OPTIMIZER_HYPER_PARAMS = ("learning_rate", "momentum")
WORLD_KEY = "zoo_world_size"  # meta of a CheckpointSeries file: the rank count of the job that wrote it


def _memory_available() -> Optional[int]:
    """Bytes of memory a process can still get (the kernel's MemAvailable: free pages plus the page cache it can
    drop), or None where /proc/meminfo does not say."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _use_memavailable_for_the_checkpoint_size_check() -> None:
    """MindSpore 2.10 refuses to load a checkpoint larger than *free* memory (``SC_AVPHYS_PAGES``), which leaves
    out the page cache: on a host that has read or written a few GB (a CI run, a dataset) free memory falls to a
    few hundred MB while 20 GB are available, and a 500 MB ZFNet checkpoint was refused ("exceeds current available
    memory 249556992 bytes"). Its check asks for MemAvailable instead; where that is unknown, MindSpore's own."""
    from mindspore.train import serialization
    original = getattr(serialization, "_get_available_memory", None)
    if original is None or getattr(original, "_zoo_memavailable", False):
        return

    def available():
        return _memory_available() or original()
    available._zoo_memavailable = True
    serialization._get_available_memory = available


_use_memavailable_for_the_checkpoint_size_check()


def _first_line(exc: BaseException, limit: int = 120) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


def save_ckpt(path, params, meta: Optional[dict] = None) -> Path:
    """Write ``params`` (a Cell, or a list of ``{'name', 'data'}``) plus ``meta`` to ``path`` atomically, with CRCs.

    ``meta`` values are what ``ms.save_checkpoint(append_dict=...)`` takes (int, float, bool, str, Tensor). A full
    disk raises one-line ``CheckpointError`` and leaves the previous file at ``path`` (if any) intact.
    """
    def _write(tmp):
        staged = tmp + ".ckpt"  # MindSpore insists on the suffix, and stages through <name>.tmp itself
        try:
            ms.save_checkpoint(params, staged, append_dict=meta or None, crc_check=True)
            os.replace(staged, tmp)
        finally:
            # a failed save (a full disk) leaves MindSpore's staging files; atomic_write removes only tmp
            for leftover in (staged, tmp + ".tmp"):
                if os.path.exists(leftover):
                    os.chmod(leftover, 0o600)  # MindSpore makes its files read-only
                    os.remove(leftover)
    return atomic_write(path, _write)


def load_ckpt(path) -> dict:
    """Parameters and metadata of a checkpoint; a missing, empty, truncated or foreign file raises CheckpointError."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint file not found")
    if p.stat().st_size == 0:
        raise CheckpointError(f"{p}: checkpoint is empty (zero bytes)")
    try:
        return ms.load_checkpoint(str(p), crc_check=True)  # files written without CRCs still load
    except Exception as exc:  # MindSpore raises ValueError/RuntimeError/TypeError for bad protobuf data
        raise CheckpointError(f"{p}: not a readable MindSpore checkpoint ({_first_line(exc)})") from None


def load_into(cell, params: dict, path, what: str = "the network", ignore=OPTIMIZER_HYPER_PARAMS) -> None:
    """Load checkpoint ``params`` into ``cell``; a mis-shaped or missing parameter is one CheckpointError line
    naming the file and ``what`` (e.g. ``'zfnet at image size 224'``). Names in ``ignore`` may be absent."""
    for p in cell.get_parameters():
        if p.name in params and tuple(params[p.name].shape) != tuple(p.shape):
            raise CheckpointError(f"{path}: does not fit {what} ({p.name} has shape {tuple(params[p.name].shape)}, "
                                  f"expected {tuple(p.shape)})")
    try:
        not_loaded, _ = ms.load_param_into_net(cell, params, strict_load=False)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: does not fit {what} ({_first_line(exc, 160)})") from None
    missing = [n for n in not_loaded if n not in ignore]
    if missing:
        raise CheckpointError(f"{path}: missing parameters {missing[:3]} for {what}"
                              + (f" ({len(missing)} in all)" if len(missing) > 3 else ""))


def meta_value(params: dict, key: str, default=None):
    """A ``meta`` value saved by :func:`save_ckpt` (a Python scalar or string), or ``default``."""
    value = params.get(key)
    if value is None:
        return default
    try:
        value = value.asnumpy()
        return value.item() if value.size == 1 else value
    except AttributeError:
        return value


def classes_meta(classes) -> dict:
    """``meta`` for :func:`save_ckpt` that carries training's class names (label = index), as a uint8 Tensor."""
    return {CLASSES_KEY: ms.Tensor(encode_classes(classes))}


def classes_of(params: dict, path) -> Optional[List[str]]:
    """Training's class names saved by :func:`classes_meta`, or None for a checkpoint without them (an original's)."""
    value = params.get(CLASSES_KEY)
    if value is None:
        return None
    return decode_classes(value.asnumpy(), where=str(path))


def check_resume_classes(params: dict, path, classes) -> None:
    """Refuse (one-line ``CheckpointError``) to resume from a checkpoint trained on other class names than
    ``classes``, the names the resumed run labels its images by (label = index): a class folder added, removed
    or renamed since would silently give images other labels than the saved head learned. A checkpoint without
    names (an original's) is accepted."""
    saved = classes_of(params, path)
    if saved is None or list(saved) == list(classes):
        return
    if len(saved) != len(classes):
        why = f"{len(saved)} classes, the training data now has {len(classes)}"
    else:
        i = next(i for i, (a, b) in enumerate(zip(saved, classes)) if a != b)
        why = f"label {i} was {saved[i]!r}, the training data now has {classes[i]!r}"
    raise CheckpointError(f"{path}: trained on other classes ({why}); resuming would train its labels on other "
                          f"images")


class CheckpointSeries:
    """The epoch checkpoints of one run in ``directory``, named by ``pattern``.

    ``pattern`` holds ``{epoch}`` and optionally ``{step}`` (MindSpore's ModelCheckpoint names files
    ``<prefix>-<epoch>_<step>.ckpt``): ``'zfnet-{epoch}.ckpt'``, ``'train_tinydarknet_imagenet-{epoch}_{step}.ckpt'``.
    ``keep``: how many newest files :meth:`save` leaves (None or 0: all). ``events_dir``: the run's output folder,
    where :meth:`save` emits the ``checkpoint`` event (None: no event); ``rank`` goes into the event. ``world``:
    the job's rank count, saved in every file's meta as ``WORLD_KEY`` (``common.ms.resume`` refuses to resume a
    job of another size from it); None: not recorded.
    """

    def __init__(self, directory, pattern: str, keep: Optional[int] = None, events_dir=None,
                 rank: Optional[int] = None, log: Callable = print, world: Optional[int] = None):
        if "{epoch}" not in pattern:
            raise ValueError(f"checkpoint name pattern {pattern!r} has no {{epoch}}")
        self.directory, self.pattern, self.keep = Path(directory), pattern, keep
        self.events_dir, self.rank, self.log, self.world = events_dir, rank, log, world
        regex = re.escape(pattern).replace(r"\{epoch\}", r"(?P<epoch>\d+)").replace(r"\{step\}", r"(?P<step>\d+)")
        self._regex = re.compile(regex + r"\Z")

    def path(self, epoch: int, step: Optional[int] = None) -> Path:
        if step is None and "{step}" in self.pattern:
            raise ValueError(f"checkpoint name pattern {self.pattern!r} needs a step")
        return self.directory / self.pattern.format(epoch=epoch, step=step)

    def _order(self, path: Path):
        """(epoch, step) from the file's name: the series' order, whatever the files' times."""
        m = self._regex.match(path.name)
        return int(m.group("epoch")), int(m.group("step")) if "step" in m.groupdict() else 0

    def files(self) -> List[Path]:
        """The series' files, oldest first by (epoch, step) in their names."""
        if not self.directory.is_dir():
            return []
        return sorted((p for p in self.directory.iterdir() if self._regex.match(p.name) and p.is_file()),
                      key=self._order)

    def save(self, params, epoch: int, global_step: int, meta: Optional[dict] = None,
             step: Optional[int] = None) -> Path:
        """Write the checkpoint of ``epoch`` epochs done (atomically), emit ``checkpoint``, then prune the oldest."""
        if self.world is not None:
            meta = {**(meta or {}), WORLD_KEY: int(self.world)}
        path = save_ckpt(self.path(epoch, step), params, meta)
        if self.events_dir is not None:
            events.emit(self.events_dir, "checkpoint", rank=self.rank, path=os.path.abspath(path),
                        epoch=int(epoch), global_step=int(global_step))
        self.prune()
        return path

    def prune(self) -> None:
        if not self.keep or self.keep <= 0:
            return
        for old in self.files()[:-self.keep]:
            try:
                os.chmod(old, 0o600)  # MindSpore leaves its files read-only
                os.remove(old)
            except OSError:  # gone already (another rank sharing the folder)
                pass

    def find_resume(self) -> Optional[Path]:
        """``--resume auto``: the newest file of the series that loads; corrupt ones are reported and skipped.

        It also deletes the temp files of saves a kill interrupted, so call it only from a training run that is
        about to write into ``directory`` (never from eval or export).
        """
        remove_stale_temps(self.directory, log=self.log)

        def _ok(path):
            load_ckpt(path)
            return True
        return latest_valid(self.files(), _ok, log=self.log, key=self._order)
