"""train.py's flags: the original's, its Ascend debugging switches, and the ones this rebuild adds.

Defaults come from ``configs/cutmix_resnet20_cifar10.json`` (or ``--config``); the command line wins.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from common import cli, config

RECIPE_DIR = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = RECIPE_DIR / "configs" / "cutmix_resnet20_cifar10.json"
PRECISION_MODES = ["allow_mix_precision", "allow_fp32_to_fp16", "force_fp32", "must_keep_origin_dtype", "force_fp16"]


def _original_flags(p):
    g = p.add_argument_group("original flags")
    g.add_argument("--data_dir", default="../cifar-10-batches-py/",
                   help="cifar-10-batches-py folder, or a folder that contains it")
    g.add_argument("--batch_size", type=cli.positive_int, default=32, help="per-device batch size")
    g.add_argument("--epochs", type=cli.positive_int, default=15)
    g.add_argument("--eval_static", type=cli.str2bool, default=False,
                   help="True: static shapes, the last partial train and test batches are dropped")
    g.add_argument("--log_steps", type=cli.positive_int, default=50, help="steps between TimeHistory lines")
    g.add_argument("--precision_mode", default=None, choices=PRECISION_MODES,
                   help="default: allow_mix_precision on NPU/GPU (float16), float32 on CPU; an explicit "
                        "mixed mode on CPU uses bfloat16")


def _npu_flags(p):
    n = p.add_argument_group("Ascend NPU debugging (refused on CPU/GPU, where they would do nothing)")
    n.add_argument("--over_dump", type=cli.str2bool, default=False, help="dump overflowing operators")
    n.add_argument("--over_dump_path", default="./overflow_dump")
    n.add_argument("--data_dump_flag", type=cli.str2bool, default=False, help="dump operator data")
    n.add_argument("--data_dump_step", default="10")
    n.add_argument("--data_dump_path", default="./data_dump")
    n.add_argument("--profiling", type=cli.str2bool, default=False)
    n.add_argument("--profiling_dump_path", default="./profiling")
    n.add_argument("--use_mixlist", type=cli.str2bool, default=None,
                   help="apply --mixlist_file to the NPU's mixed-precision lists (default: on, as the "
                        "original scripts)")
    n.add_argument("--mixlist_file", default=str(RECIPE_DIR / "configs" / "ops_info.json"))
    n.add_argument("--fusion_off_flag", type=cli.str2bool, default=False)
    n.add_argument("--fusion_off_file", default="./fusion_switch.cfg")


def _added_flags(p):
    o = p.add_argument_group("added by this rebuild")
    o.add_argument("--config", default=str(DEFAULT_CONFIG),
                   help="JSON file of defaults (keys = flag names); the command line wins")
    o.add_argument("--output_path", default="./output", help="checkpoints, model, logs and records go here")
    o.add_argument("--no_cutmix", action="store_true",
                   help="keras-io's baseline: no CutMix, the training images in file order (not shuffled)")
    o.add_argument("--shuffle_baseline", action="store_true",
                   help="with --no_cutmix: shuffle the training images (1024-image buffer, reshuffled every "
                        "epoch), which keras-io's baseline does not")
    o.add_argument("--save_samples", action="store_true",
                   help="write cutmix_samples.png: a grid of augmented training images with mixed labels")
    o.add_argument("--seed", type=int, default=42, help="seeds initial weights, shuffling and CutMix")
    o.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu", "npu"])
    o.add_argument("--resume", default=None,
                   help="'auto' (the valid checkpoint of the highest epoch in <output_path>/checkpoints) or a checkpoint folder")
    o.add_argument("--train_steps", type=cli.positive_int, default=None, help=cli.TRAIN_STEPS_HELP)
    o.add_argument("--perf", action="store_true",
                   help="a performance run: the run record is named _dynamic_eval_perf / _static_eval_perf")
    o.add_argument("--keep_checkpoints", type=cli.positive_int, default=2)
    cli.add_rank_checkpoints(o, "multi-worker job: every worker keeps its own checkpoints and final model in "
                                "<output_path>/rank_<r>/ (rank 0: the usual places), so the ranks can be compared "
                                "(former name: --keep_rank_checkpoints)", "--keep_rank_checkpoints")
    o.add_argument("--tensorboard", action="store_true", help="write TensorBoard events to <output_path>/tensorboard")


def build_parser(description=None):
    p = argparse.ArgumentParser(description=description, allow_abbrev=False)
    _original_flags(p)
    _npu_flags(p)
    _added_flags(p)
    return p


def parse(argv=None, description=None):
    """The flags over the config file's defaults; a bad config file is an argument error (usage, exit 2)."""
    parser = build_parser(description)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=str(DEFAULT_CONFIG))
    known, _ = pre.parse_known_args(argv)
    try:
        args = config.parse_args(parser, argv, config=known.config)
    except config.ConfigError as exc:
        parser.error(str(exc))
    if args.shuffle_baseline and not args.no_cutmix:
        # refused rather than ignored: the CutMix stream is always shuffled (as the original)
        parser.error("--shuffle_baseline: only with --no_cutmix (the CutMix stream is always shuffled)")
    return args
