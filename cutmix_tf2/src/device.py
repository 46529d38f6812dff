"""Device choice (Ascend NPU if its TF2 adapter imports, else GPU, else CPU) and precision policy."""
from __future__ import annotations

import importlib.util

import tensorflow as tf
import tf_keras as keras

from common.cli import RecipeError

# precision modes of the Ascend adapter; the first two mean "mixed" on a GPU/CPU as well
MIXED_MODES = ("allow_mix_precision", "allow_fp32_to_fp16")
FP32_MODES = ("force_fp32", "must_keep_origin_dtype")
PRECISION_MODES = MIXED_MODES + FP32_MODES + ("force_fp16",)

# NPU debugging flags of the original and the value that means "off"
# (use_mixlist defaults to None = on, with configs/ops_info.json, as the original scripts set it)
NPU_DEBUG_DEFAULTS = {"over_dump": False, "data_dump_flag": False, "profiling": False,
                      "use_mixlist": None, "fusion_off_flag": False}


class DeviceError(RecipeError):
    """A device or precision flag this machine cannot honour (one line, exit 2 at the entry point)."""


def npu_available() -> bool:
    return importlib.util.find_spec("npu_device") is not None


def select_device(requested: str) -> str:
    """``auto|cpu|gpu|npu`` -> the device to use; asking for an absent one is an error, not a fallback."""
    gpus = tf.config.list_physical_devices("GPU")
    if requested == "auto":
        requested = "npu" if npu_available() else ("gpu" if gpus else "cpu")
    if requested == "npu" and not npu_available():
        raise DeviceError("--device npu: the Ascend TF2 adapter (npu_device) is not importable")
    if requested == "gpu" and not gpus:
        raise DeviceError("--device gpu: TensorFlow sees no GPU")
    if requested == "cpu" and gpus:
        tf.config.set_visible_devices([], "GPU")
    return requested


def resolve_precision(device: str, precision_mode) -> str:
    """The precision the run uses: the original's ``allow_mix_precision`` on NPU/GPU, float32 on CPU.

    On a CPU an explicit mixed mode is honoured with bfloat16 (an opt-in; float16 is slow there).
    """
    if precision_mode is None:
        return "fp32" if device == "cpu" else "mixed"
    if precision_mode in FP32_MODES:
        return "fp32"
    if precision_mode == "force_fp16" and device != "npu":
        raise DeviceError("--precision_mode force_fp16 exists only on the Ascend NPU")
    return "mixed"


def apply_precision(device: str, precision: str) -> str:
    """Sets the Keras policy; returns its name (the NPU applies precision inside its own graph compiler)."""
    if precision == "mixed" and device == "gpu":
        policy = "mixed_float16"
    elif precision == "mixed" and device == "cpu":
        policy = "mixed_bfloat16"
    else:
        policy = "float32"
    keras.mixed_precision.set_global_policy(policy)
    return policy


def check_npu_flags(args, device: str) -> None:
    """The NPU dump/profiling/fusion flags only exist on the Ascend stack: refuse them elsewhere."""
    if device == "npu":
        return
    set_flags = [f"--{k}" for k, off in NPU_DEBUG_DEFAULTS.items() if getattr(args, k) != off]
    if set_flags:
        raise DeviceError(f"{', '.join(set_flags)}: NPU debugging flag(s) have no effect on {device}; "
                          "drop them or run with --device npu on an Ascend machine")


def open_npu(args) -> None:
    """Configure and open the Ascend device the way the original does (dump, profiling, precision, mixlist)."""
    import npu_device  # only on Ascend machines

    opts = npu_device.global_options()
    if args.data_dump_flag:
        opts.dump_config.enable_dump = True
        opts.dump_config.dump_path = args.data_dump_path
        opts.dump_config.dump_step = args.data_dump_step
        opts.dump_config.dump_mode = "all"
    if args.over_dump:
        opts.dump_config.enable_dump_debug = True
        opts.dump_config.dump_path = args.over_dump_path
        opts.dump_config.dump_debug_mode = "all"
    if args.profiling:
        opts.profiling_config.enable_profiling = True
        opts.profiling_config.profiling_options = (
            '{"output":"%s","training_trace":"on","task_trace":"on","aicpu":"on",'
            '"aic_metrics":"PipeUtilization","fp_point":"","bp_point":""}' % args.profiling_dump_path)
    opts.precision_mode = args.precision_mode or "allow_mix_precision"
    if args.use_mixlist is not False and opts.precision_mode == "allow_mix_precision":
        opts.modify_mixlist = args.mixlist_file
    if args.fusion_off_flag:
        opts.fusion_switch_file = args.fusion_off_file
    npu_device.open().as_default()
