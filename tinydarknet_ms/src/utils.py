"""Device choice, distributed start-up and the training checkpoints of train.py."""
import importlib.util
import os
import shutil

import mindspore as ms

from common.cli import RecipeError
from common.ms import CheckpointSeries, load_ckpt, load_into, meta_value
from common.ms.metrics import LogitsCollector, eval_metrics  # noqa: F401  (eval.py takes them from here)
from common.ms.checkpoint import check_resume_classes
from common.ms.resume import saved_world
from common.resume import check_world

AMP_BY_DEVICE = {"Ascend": "O3", "GPU": "O2", "CPU": "O0"}  # the original's Model(amp_level=...) per device


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
        raise RecipeError(f"device_target {device_target}: this MindSpore installation cannot use it "
                          f"({first.strip()[:150]}); use --device_target=auto or CPU, or install the MindSpore "
                          "build for that device") from None
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


# ---- checkpoints (files, series, loading: common.ms) -------------------------------------------------------
def checkpoint_series(ckpt_dir, prefix, keep=None, events_dir=None, rank=None, world=None):
    """A run's checkpoints, named as MindSpore's ModelCheckpoint names them: ``<prefix>-<epoch>_<step>.ckpt``;
    each records ``world``, the job's rank count."""
    return CheckpointSeries(ckpt_dir, prefix + "-{epoch}_{step}.ckpt", keep=keep, events_dir=events_dir, rank=rank,
                            world=world)


def global_step_of(series, path):
    """A series file's global step, from its name: <epoch>_<steps per epoch>."""
    epoch, steps_per_epoch = series._order(path)
    return epoch * steps_per_epoch


def restore_training(cell, path, world=1, params=None, classes=None):
    """Load a checkpoint written by train.py into the training cell (weights, momentum, the optimiser's global
    step, hence the LR position, and a dynamic loss scale); returns (epochs done, global step).

    ``params``: the checkpoint already loaded (``--resume auto`` read it to agree on it). A checkpoint of a job
    with another rank count than ``world`` (``common.resume.check_world``), or trained on other class names
    than ``classes`` (the run's, ``common.ms.checkpoint.check_resume_classes``), is refused with one line."""
    params = load_ckpt(path) if params is None else dict(params)
    check_world(path, saved_world(params), world)
    if classes is not None:
        check_resume_classes(params, path, classes)
    epoch = meta_value(params, "epoch_num")
    if epoch is None:
        raise RecipeError(f"{path}: no epoch_num in this checkpoint, it was not written by train.py "
                          "(use pre_trained instead)")
    global_step = meta_value(params, "step_num", meta_value(params, "global_step", 0))
    for key in ("epoch_num", "step_num"):
        params.pop(key, None)
    load_into(cell, params, path, "the training network (weights and optimiser state)")
    return int(epoch), int(global_step)
