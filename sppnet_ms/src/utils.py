"""Device selection and checkpoint files (atomic writes through ``common.checkpoint``)."""
import glob
import importlib.util
import os
import re

import mindspore as ms

from common.checkpoint import CheckpointError, atomic_write, latest_valid, remove_stale_temps

TARGETS = {'ascend': 'Ascend', 'npu': 'Ascend', 'gpu': 'GPU', 'cuda': 'GPU', 'cpu': 'CPU'}


def _available(target):
    try:
        return bool(ms.hal.is_available(target))
    except Exception:  # an absent or broken device stack means "not available", never a crash
        return False


def resolve_device_target(requested='auto'):
    """'auto' -> Ascend if its stack is present, else GPU, else CPU. Explicit names are checked."""
    req = (requested or 'auto').lower()
    if req == 'auto':
        if (importlib.util.find_spec('acl') or os.path.isdir('/usr/local/Ascend')) and _available('Ascend'):
            return 'Ascend'
        if (os.path.exists('/dev/nvidiactl') or os.environ.get('CUDA_VISIBLE_DEVICES')) and _available('GPU'):
            return 'GPU'
        return 'CPU'
    if req not in TARGETS:
        raise ValueError(f"--device_target must be Ascend, GPU, CPU or auto, got '{requested}'")
    target = TARGETS[req]
    if target != 'CPU' and not _available(target):
        raise ValueError(f"--device_target {target}: this MindSpore build or machine has no {target} support")
    return target


def default_amp_level(target):
    # the original trained with O2 (fp16 with fp32 master weights) on Ascend and GPU; CPU stays fp32
    return 'O0' if target == 'CPU' else 'O2'


def save_ckpt(path, params, meta=None):
    """Write ``params`` (a Cell or a list of {'name', 'data'}) plus ``meta`` to ``path`` atomically."""
    def _write(tmp):
        # MindSpore appends '.ckpt' to names without it, so save beside the temp name and move it over
        try:
            ms.save_checkpoint(params, tmp + '.ckpt', append_dict=meta or None)
            os.replace(tmp + '.ckpt', tmp)
        finally:
            # a failed save (a full disk) leaves MindSpore's staging files; atomic_write removes only tmp
            for leftover in (tmp + '.ckpt', tmp + '.tmp'):
                if os.path.exists(leftover):
                    os.remove(leftover)
    return atomic_write(path, _write)


def load_ckpt(path):
    """Parameters and metadata of a checkpoint; a missing, truncated or foreign file raises CheckpointError."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        return ms.load_checkpoint(path)
    except Exception as exc:  # MindSpore raises ValueError/RuntimeError for bad protobuf data
        first = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable MindSpore checkpoint ({first})") from None


def load_into(net, params, path, what):
    """Load checkpoint ``params`` into ``net``; a shape or name mismatch names the file and the model."""
    try:
        not_loaded, _ = ms.load_param_into_net(net, params)
    except (RuntimeError, ValueError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: does not fit {what} ({first})") from None
    # the optimiser's own hyper-parameters (learning_rate, momentum) are rebuilt from the config, not restored
    missing = [n for n in not_loaded if n not in ('learning_rate', 'momentum')]
    if missing:
        raise CheckpointError(f"{path}: missing parameters {missing[:3]} for {what}")


def meta_value(params, key, default=None):
    value = params.get(key)
    if value is None:
        return default
    try:
        value = value.asnumpy()
        return value.item() if value.size == 1 else value
    except AttributeError:
        return value


def epoch_checkpoints(ckpt_dir, prefix):
    pattern = re.compile(re.escape(prefix) + r'-(\d+)\.ckpt$')
    found = []
    for path in glob.glob(os.path.join(glob.escape(ckpt_dir), f'{prefix}-*.ckpt')):
        m = pattern.search(os.path.basename(path))
        if m:
            found.append((int(m.group(1)), path))
    return [p for _, p in sorted(found)]


def find_resume(ckpt_dir, prefix, log=print):
    """Newest epoch checkpoint that loads; corrupt ones are reported and skipped (train.py's --resume auto only:
    it also deletes the temp files of saves a kill interrupted)."""
    remove_stale_temps(ckpt_dir, log=log)

    def _ok(path):
        load_ckpt(str(path))
        return True
    return latest_valid(epoch_checkpoints(ckpt_dir, prefix), _ok, log=log)
