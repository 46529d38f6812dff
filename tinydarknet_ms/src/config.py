"""Configuration: ``config/*.yaml`` supplies the values, the command line overrides them (common.config).

As the original's ``src/model_utils/config.py``: ``--config_path`` picks the YAML file and every key has a
``--<key>`` flag. Unlike the original, a key the recipe does not know is an error, not silently kept.
"""
import argparse
import ast
import os
from pathlib import Path

from common.cli import TRAIN_STEPS_HELP, non_negative_int, positive_int, str2bool
from common.config import ConfigError, load_config_file, parse_args

RECIPE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = RECIPE_DIR / "config" / "imagenet_config.yaml"


def int_list(v):
    if isinstance(v, (list, tuple)):
        return [int(x) for x in v]
    try:
        parsed = ast.literal_eval(str(v)) if str(v).strip().startswith("[") else str(v).split(",")
        return [int(x) for x in parsed if str(x).strip() != ""]
    except (ValueError, SyntaxError):
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {v!r}") from None


# key: (type, default, help). The YAML files hold the original's values; these are the fallbacks.
KEYS = {
    # device and run
    "device_target": (str, "auto", "Ascend | GPU | CPU | auto (Ascend if its stack imports, else GPU, else CPU)"),
    "device_id": (int, -1, "device to use; -1 takes DEVICE_ID from the environment (0 if unset)"),
    "seed": (int, 1, "global seed (set_seed); also seeds the per-epoch data order and augmentation"),
    "output_path": (str, ".", "root for checkpoints (relative ckpt_save_dir), summary, run records"),
    "tensorboard": (str2bool, False, "also write MindSpore summary files for TensorBoard/MindInsight"),
    "log_every": (positive_int, 50, "print a progress line every N steps when output is not a terminal"),
    # data
    "dataset_name": (str, "imagenet", "imagenet (the only dataset this rebuild supports)"),
    "data_path": (str, "", "folder holding train/ and val/ (used where train_data_dir/val_data_dir are empty)"),
    "train_data_dir": (str, "", "ImageNet-style train folder (<wnid>/*.JPEG)"),
    "val_data_dir": (str, "", "ImageNet-style val folder (<wnid>/*.JPEG)"),
    "num_classes": (positive_int, 1000, "number of classes (the final 1x1 conv's outputs)"),
    "image_size": (positive_int, 224, "train crop / eval centre crop; eval resizes the short side to 256/224 of it"),
    "batch_size": (positive_int, 128, "per-device batch size"),
    "num_parallel_workers": (non_negative_int, 0, "data-map workers; 0 = min(24, cores) / devices as the original"),
    "check_images": (str2bool, True, "decode every image once before training to find bad files"),
    "skip_bad_images": (str2bool, False, "drop bad images (each reported) instead of stopping at the first"),
    "augment": (str2bool, True, "the original's random crop, flip and colour jitter in training; False = the "
                                "eval transforms (runs that must see the same pixels on every process)"),
    # optimisation
    "epoch_size": (positive_int, 500, "training epochs"),
    "train_steps": (non_negative_int, 0, TRAIN_STEPS_HELP + "; 0 = unset"),
    "lr_init": (float, 0.1, "peak learning rate"),
    "lr_scheduler": (str, "exponential", "exponential (really multi-step) | cosine_annealing"),
    "lr_epochs": (int_list, [70, 140, 210, 280], "epochs at which 'exponential' multiplies the LR by lr_gamma"),
    "lr_gamma": (float, 0.3, "decay factor of 'exponential'"),
    "eta_min": (float, 0.0, "floor of 'cosine_annealing'"),
    "T_max": (positive_int, 150, "half-period in epochs of 'cosine_annealing'"),
    "warmup_epochs": (float, 0, "linear warm-up epochs (both schedules)"),
    "momentum": (float, 0.9, "Momentum optimiser momentum"),
    "weight_decay": (float, 1e-4, "weight decay (not applied to BN gamma/beta or biases)"),
    "loss_scale": (float, 1024, "fixed loss scale (ignored with is_dynamic_loss_scale)"),
    "is_dynamic_loss_scale": (str2bool, False, "DynamicLossScaleManager(65536, 2, 2000) instead of the fixed scale"),
    "use_label_smooth": (str2bool, True, "label smoothing on"),
    "label_smooth_factor": (float, 0.1, "label smoothing factor"),
    "amp_level": (str, "auto", "auto (O3 Ascend, O2 GPU, O0 CPU as the original) | O0 | O1 | O2 | O3"),
    "leaky_relu": (str, "auto", "auto (mix on CPU, max on Ascend/GPU) | mix: LeakyReLU(0.2) as 0.2x + 0.8 relu(x) "
                                "(same function, faster CPU gradient) | max: nn.LeakyReLU's maximum(0.2x, x) as the "
                                "original"),
    "max_pool": (str, "auto", "auto (kernel on CPU where a probe of the host finds it faster, else nn) | kernel: "
                              "compiled 2x2 max-pool and gradient (src/max_pool.py; CPU, fp32, image_size a "
                              "multiple of 16) | nn: nn.MaxPool2d as the original"),
    # checkpoints and evaluation
    "pre_trained": (str2bool, False, "initialise the network from checkpoint_path before training"),
    "checkpoint_path": (str, "", "checkpoint for pre_trained, eval.py and export.py"),
    "logits_file": (str, "", "eval.py: also save every val image's logits, label and path here (.npz; ours, for "
                             "comparing outputs); empty = not saved"),
    "ckpt_save_dir": (str, "checkpoints", "checkpoints go to <ckpt_save_dir>/<rank>/ (relative: under output_path)"),
    "save_checkpoint_epochs": (positive_int, 50, "save every N epochs (and after the last epoch)"),
    "keep_checkpoint_max": (positive_int, 1, "keep the newest N checkpoints"),
    "resume": (str, "", "checkpoint to resume from, or 'auto' (newest valid one in the checkpoint folder)"),
    "run_eval": (str2bool, False, "evaluate on val_data_dir during training"),
    "eval_interval": (positive_int, 1, "evaluate every N epochs when run_eval is on"),
    # export
    "file_name": (str, "tinydarknet", "export.py output name (the format's suffix is added)"),
    "file_format": (str, "MINDIR", "MINDIR | ONNX | AIR (Ascend only) | ALL (MINDIR and ONNX)"),
}

CHOICES = {
    "device_target": ("auto", "Ascend", "GPU", "CPU"),
    "dataset_name": ("imagenet",),
    "lr_scheduler": ("exponential", "cosine_annealing"),
    "amp_level": ("auto", "O0", "O1", "O2", "O3"),
    "leaky_relu": ("auto", "mix", "max"),
    "max_pool": ("auto", "kernel", "nn"),
    "file_format": ("MINDIR", "ONNX", "AIR", "ALL"),
}

# train.py flags that are not config keys: what kind of run this is is said on the command line, not by a file
TRAIN_FLAGS = {
    "perf": "a performance run: the run record's CaseName ends in _perf instead of _acc (the "
            "test/train_performance_*.sh scripts pass it)",
}


class OneLineParser(argparse.ArgumentParser):
    """Errors are one line (no usage dump), so a bad flag or config key is easy to spot in a log."""

    def error(self, message):
        self.exit(2, f"ERROR: {self.prog}: {message} (see --help)\n")


def build_parser(description, keys=None):
    parser = OneLineParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config_path", default=str(DEFAULT_CONFIG), help="YAML config file")
    for key in keys or KEYS:
        typ, default, text = KEYS[key]
        parser.add_argument(f"--{key}", type=typ, default=default, choices=CHOICES.get(key), help=text)
    if keys is None:  # train.py
        for flag, text in TRAIN_FLAGS.items():
            parser.add_argument(f"--{flag}", action="store_true", help=text)
    return parser


def get_config(argv=None, description="Tiny-DarkNet", keys=None, prog=None):
    """Parse ``argv`` over the YAML file named by ``--config_path``; errors end with a one-line message."""
    parser = build_parser(description, keys)
    parser.prog = prog or parser.prog
    pre, _ = parser.parse_known_args(argv)
    try:
        values = load_config_file(pre.config_path)
        # one YAML file serves train, eval and export: keys of the other entries are dropped here, and keys
        # no entry knows are passed on for common.config to reject
        selected = keys or KEYS
        values = {k: _coerce(pre.config_path, k, v) for k, v in values.items() if k in selected or k not in KEYS}
        cfg = parse_args(parser, argv, values, source=pre.config_path)
    except ConfigError as exc:
        parser.error(str(exc))
    return cfg


def _coerce(path, key, value):
    if key in TRAIN_FLAGS:
        raise ConfigError(f"{path}: key '{key}' is a command-line flag (--{key}), not a config key")
    if key not in KEYS:
        return value  # left for common.config to reject with the file name
    typ = KEYS[key][0]
    try:
        value = typ(value)
    except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
        raise ConfigError(f"{path}: key '{key}': {exc}") from None
    if key in CHOICES and value not in CHOICES[key]:
        raise ConfigError(f"{path}: key '{key}' must be one of {', '.join(CHOICES[key])}, got {value!r}")
    return value


def device_id_from_env(cfg):
    return cfg.device_id if cfg.device_id >= 0 else int(os.environ.get("DEVICE_ID", "0") or 0)
