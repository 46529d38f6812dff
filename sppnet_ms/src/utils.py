"""Device selection (checkpoint files: ``common.ms``)."""
import importlib.util
import os

import mindspore as ms

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
