"""Device choice, distributed start-up and checkpoint files shared by train.py, eval.py and export.py."""
import glob
import importlib.util
import os
import re
import shutil
import sys
from pathlib import Path

import mindspore as ms

from common.checkpoint import CheckpointError, atomic_write, latest_valid, remove_stale_temps

AMP_BY_DEVICE = {"Ascend": "O3", "GPU": "O2", "CPU": "O0"}  # the original's Model(amp_level=...) per device


def fail(msg, code=2):
    """One-line error and a non-zero exit: what every entry does with bad input."""
    print(f"ERROR: {msg}", file=sys.stderr, flush=True)
    sys.exit(code)


def detect_device(requested="auto"):
    """Ascend if its stack imports, else a GPU if one is visible, else CPU; an explicit choice is kept."""
    if requested != "auto":
        return requested
    # probe cheaply first: asking MindSpore about a backend whose libraries are absent prints loader noise
    if importlib.util.find_spec("acl") is not None and _available("Ascend"):
        return "Ascend"
    if (shutil.which("nvidia-smi") or os.path.exists("/dev/nvidia0")) and _available("GPU"):
        return "GPU"
    return "CPU"


def _available(target):
    try:
        return bool(ms.hal.is_available(target))
    except Exception:  # any failure to probe a backend means it is not usable
        return False


def is_distributed():
    """Launched as one rank of several: by the Ascend scripts (RANK_SIZE) or by msrun (MS_WORKER_NUM)."""
    return int(os.environ.get("RANK_SIZE", "1") or 1) > 1 or int(os.environ.get("MS_WORKER_NUM", "1") or 1) > 1


def setup_context(device_target, device_id=0, distributed=False):
    """Graph mode on the chosen device; returns (rank, group_size)."""
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        if device_target == "CPU":
            ms.set_device("CPU")
        else:
            ms.set_device(device_target, device_id)
    except (RuntimeError, ValueError) as exc:
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        fail(f"device_target {device_target}: this MindSpore installation cannot use it ({first.strip()[:150]}); "
             "use --device_target=auto or CPU, or install the MindSpore build for that device")
    if not distributed:
        return 0, 1
    from mindspore.communication import get_group_size, get_rank, init
    init()
    group_size = get_group_size()
    ms.reset_auto_parallel_context()
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                 device_num=group_size)
    return get_rank(), group_size


def resolve_amp(amp_level, device_target):
    return AMP_BY_DEVICE.get(device_target, "O0") if amp_level == "auto" else amp_level


def resolve_leaky(leaky_relu, device_target):
    """--leaky_relu auto: the mix form only on CPU, where its faster gradient was measured; the original's
    nn.LeakyReLU on Ascend and GPU, where no measurement says the rewrite helps (their kernels differ)."""
    if leaky_relu == "auto":
        return "mix" if device_target == "CPU" else "max"
    return leaky_relu


# ---- checkpoints ------------------------------------------------------------------------------------------
CKPT_RE = re.compile(r"-(\d+)_(\d+)\.ckpt$")


def ckpt_name(prefix, epoch, step):
    """MindSpore's ModelCheckpoint naming: ``<prefix>-<epoch>_<step>.ckpt``."""
    return f"{prefix}-{epoch}_{step}.ckpt"


def save_checkpoint_atomic(cell, path, append_dict=None):
    """Write a CRC-checked checkpoint beside ``path`` and rename it into place.

    MindSpore's own writer deletes a same-named file first and its ModelCheckpoint prunes the oldest file
    before writing the new one, so a kill mid-save could leave no valid checkpoint; here the previous files
    stay until the new one is complete and synced.
    """
    def _write(tmp):
        staged = tmp + ".ckpt"  # MindSpore insists on the suffix, and stages through <name>.tmp itself
        try:
            ms.save_checkpoint(cell, staged, append_dict=append_dict, crc_check=True)
            os.replace(staged, tmp)
        finally:
            for leftover in (staged, tmp + ".tmp"):
                if os.path.exists(leftover):
                    os.chmod(leftover, 0o600)
                    os.remove(leftover)
    return atomic_write(path, _write)


def prune_checkpoints(directory, prefix, keep):
    files = sorted(glob.glob(os.path.join(directory, f"{prefix}-*.ckpt")), key=_ckpt_order)
    for old in files[:-keep] if keep > 0 else []:
        try:
            os.chmod(old, 0o600)
            os.remove(old)
        except OSError:
            pass


def _ckpt_order(path):
    m = CKPT_RE.search(path)
    return (int(m.group(1)), int(m.group(2)), os.path.getmtime(path)) if m else (-1, -1, os.path.getmtime(path))


def read_checkpoint(path):
    """Parameters of a checkpoint; a missing, truncated or corrupt file raises CheckpointError naming it."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint not found")
    if p.stat().st_size == 0:
        raise CheckpointError(f"{p}: checkpoint is empty (zero bytes)")
    try:
        return ms.load_checkpoint(str(p), crc_check=True)  # files without CRCs still load
    except Exception as exc:  # MindSpore raises ValueError/RuntimeError/TypeError for bad files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{p}: not a readable MindSpore checkpoint ({first[:120]})") from None


def find_resume(directory, prefix, log=print):
    """Newest checkpoint in ``directory`` that loads; corrupt ones are reported and skipped (train.py's --resume
    auto only: it also deletes the temp files of saves a kill interrupted)."""
    remove_stale_temps(directory, log=log)
    cands = glob.glob(os.path.join(directory, f"{prefix}-*.ckpt"))

    def _ok(p):
        read_checkpoint(p)
        return True
    return latest_valid(sorted(cands, key=_ckpt_order), _ok, log=log)


def load_into(cell, params, path, hint=""):
    """Load checkpoint parameters into ``cell``; a missing or mis-shaped parameter is a one-line error."""
    for p in cell.get_parameters():
        if p.name in params and tuple(params[p.name].shape) != tuple(p.shape):
            fail(f"{path}: {p.name} has shape {tuple(params[p.name].shape)} but the network expects "
                 f"{tuple(p.shape)}{hint}")
    missing, _ = ms.load_param_into_net(cell, params, strict_load=False)
    if missing:
        fail(f"{path}: checkpoint lacks {len(missing)} parameter(s) of the network, e.g. {missing[0]}{hint}")
