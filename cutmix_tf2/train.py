"""Train ResNet-20 v1 with CutMix on CIFAR-10 (tf-keras, tf.data).

Rebuild of Ascend ModelZoo ``cutmix_ID2502_for_TensorFlow2.X``, itself a port of the keras-io example
``examples/vision/cutmix.py`` (Sayan Nath, 2021-06-08). keras-io reports 80.36 % test accuracy after
15 epochs with CutMix (72.70 % without). Unlike the original, the trained model is saved
(per-epoch checkpoints, ``model.h5`` and ``saved_model/``), and runs can be resumed.

    python train.py --data_dir=<cifar-10-batches-py or its parent> --output_path=out [--epochs=15]
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import warnings
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
RECIPE_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(RECIPE_DIR))
if str(RECIPE_DIR.parent) not in sys.path:
    sys.path.insert(1, str(RECIPE_DIR.parent))

# oneDNN kernels on or off, as a probe measured on this host (TensorFlow reads the setting at import; a
# TF_ENABLE_ONEDNN_OPTS of the user's is kept)
from common.tf_onednn import choose_tf_onednn_opts  # noqa: E402

choose_tf_onednn_opts()

from common import cputune  # noqa: E402
from common.cifar import DatasetError  # noqa: E402
from common.checkpoint import CheckpointError, atomic_write, atomic_write_dir, remove_stale_temps  # noqa: E402
from common.config import ConfigError, parse_args  # noqa: E402
from src import checkpointing  # noqa: E402
from src.data import load_arrays, one_hot, shard  # noqa: E402

NETWORK = "cutmix_ID2502_for_TensorFlow2.X"
# HDF5 is the original's model format: keep it without tf-keras' "legacy format" warning on every run
warnings.filterwarnings("ignore", message="You are saving your model as an HDF5 file")
DEFAULT_CONFIG = RECIPE_DIR / "configs" / "cutmix_resnet20_cifar10.json"


def literal_bool(text):
    """``True``/``False`` read with ast.literal_eval, as the original parses its switches."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = None
    if not isinstance(value, bool):
        raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")
    return value


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    g = p.add_argument_group("original flags")
    g.add_argument("--data_dir", default="../cifar-10-batches-py/",
                   help="cifar-10-batches-py folder, or a folder that contains it")
    g.add_argument("--batch_size", type=positive_int, default=32, help="per-device batch size")
    g.add_argument("--epochs", type=positive_int, default=15)
    g.add_argument("--eval_static", type=literal_bool, default=False,
                   help="True: static shapes, the last partial train and test batches are dropped")
    g.add_argument("--log_steps", type=positive_int, default=50, help="steps between TimeHistory lines")
    g.add_argument("--precision_mode", default=None,
                   choices=["allow_mix_precision", "allow_fp32_to_fp16", "force_fp32", "must_keep_origin_dtype",
                            "force_fp16"],
                   help="default: allow_mix_precision on NPU/GPU (float16), float32 on CPU; an explicit "
                        "mixed mode on CPU uses bfloat16")
    n = p.add_argument_group("Ascend NPU debugging (refused on CPU/GPU, where they would do nothing)")
    n.add_argument("--over_dump", type=literal_bool, default=False, help="dump overflowing operators")
    n.add_argument("--over_dump_path", default="./overflow_dump")
    n.add_argument("--data_dump_flag", type=literal_bool, default=False, help="dump operator data")
    n.add_argument("--data_dump_step", default="10")
    n.add_argument("--data_dump_path", default="./data_dump")
    n.add_argument("--profiling", type=literal_bool, default=False)
    n.add_argument("--profiling_dump_path", default="./profiling")
    n.add_argument("--use_mixlist", type=literal_bool, default=None,
                   help="apply --mixlist_file to the NPU's mixed-precision lists (default: on, as the "
                        "original scripts)")
    n.add_argument("--mixlist_file", default=str(RECIPE_DIR / "configs" / "ops_info.json"))
    n.add_argument("--fusion_off_flag", type=literal_bool, default=False)
    n.add_argument("--fusion_off_file", default="./fusion_switch.cfg")
    o = p.add_argument_group("added by this rebuild")
    o.add_argument("--config", default=str(DEFAULT_CONFIG),
                   help="JSON file of defaults (keys = flag names); the command line wins")
    o.add_argument("--output_path", default="./output", help="checkpoints, model, logs and records go here")
    o.add_argument("--no_cutmix", action="store_true", help="baseline: plain shuffled batches, no CutMix")
    o.add_argument("--save_samples", action="store_true",
                   help="write cutmix_samples.png: a grid of augmented training images with mixed labels")
    o.add_argument("--seed", type=int, default=42, help="seeds initial weights, shuffling and CutMix")
    o.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu", "npu"])
    o.add_argument("--resume", default=None,
                   help="'auto' (newest valid checkpoint in <output_path>/checkpoints) or a checkpoint folder")
    o.add_argument("--train_steps", type=positive_int, default=None,
                   help="at most this many steps per epoch (performance runs)")
    o.add_argument("--perf", action="store_true",
                   help="name the run record as a performance case (_dynamic_eval_perf / _static_eval_perf)")
    o.add_argument("--keep_checkpoints", type=positive_int, default=2)
    o.add_argument("--tensorboard", action="store_true", help="write TensorBoard events to <output_path>/tensorboard")
    return p


def parse(argv=None):
    parser = build_parser()
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=str(DEFAULT_CONFIG))
    known, _ = pre.parse_known_args(argv)
    try:
        return parse_args(parser, argv, config=known.config)
    except ConfigError as exc:
        parser.error(str(exc))


def fail(msg, code=2):
    print(f"ERROR: {msg}", file=sys.stderr, flush=True)
    return code


def cluster_info():
    """(rank, world size) from TF_CONFIG, which MultiWorkerMirroredStrategy reads too."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return 0, 1
    try:
        cfg = json.loads(raw)
        workers = cfg["cluster"]["worker"]
        return int(cfg["task"]["index"]), len(workers)
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"TF_CONFIG: malformed ({exc})") from None


def main(argv=None) -> int:
    # -- arguments and data (numpy only: bad input fails before TensorFlow starts) --
    args = parse(argv)
    if hasattr(sys.stdout, "reconfigure"):  # log lines reach train_<id>.log (a pipe) as they happen
        sys.stdout.reconfigure(line_buffering=True)
    try:
        rank, world = cluster_info()
        x_train, y_train, x_test, y_test, names = load_arrays(args.data_dir)
        if args.tensorboard and importlib.util.find_spec("tensorboard") is None:
            raise ValueError("--tensorboard: the tensorboard package is not installed (pip install tensorboard)")
        if args.resume and args.resume != "auto":
            checkpointing.verify(args.resume)
    except (DatasetError, ValueError) as exc:
        return fail(exc)
    except CheckpointError as exc:
        return fail(f"cannot resume: {exc}")
    x_shard, y_shard = shard(x_train, y_train, rank, world)
    y_shard, y_test = one_hot(y_shard), one_hot(y_test)

    # -- device, precision, distribution, seeds --
    import tensorflow as tf
    import tf_keras as keras
    from common.runrecord import case_name, finish_run
    from common.throughput import ThroughputMeter
    from src import device as dev, pipeline
    from src.callbacks import CheckpointSaver, ProgressLogger, SummaryWriter, TimeHistory
    from src.model import count_params, resnet_v1

    try:
        device = dev.select_device(args.device)
        dev.check_npu_flags(args, device)
        precision = dev.resolve_precision(device, args.precision_mode)
    except dev.DeviceError as exc:
        return fail(exc)
    out = Path(args.output_path).resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return fail(f"{out}: cannot create output folder ({exc.strerror})")
    ckpt_root = out / "checkpoints"
    if device == "npu":
        dev.open_npu(args)
    policy = dev.apply_precision(device, precision)
    strategy = tf.distribute.MultiWorkerMirroredStrategy() if world > 1 else tf.distribute.get_strategy()
    # the original seeds numpy and TensorFlow; tf-keras' unseeded initialisers draw from Python's `random`,
    # so it is seeded too, or the initial weights would differ from run to run
    keras.utils.set_random_seed(args.seed)
    is_chief = rank == 0
    say = print if is_chief else (lambda *a, **k: None)
    say(f"cutmix_tf2: device={device} precision={policy} workers={world} cutmix={not args.no_cutmix} "
        f"eval_static={args.eval_static} batch_size={args.batch_size} epochs={args.epochs} seed={args.seed} "
        f"train={len(x_train)} test={len(x_test)} data={args.data_dir}", flush=True)
    if is_chief:
        cputune.announce()  # the CPU and what was probed on it (TensorFlow's oneDNN kernels on or off)

    # -- model: initial weights saved then reloaded, as the original does --
    with strategy.scope():
        model = resnet_v1(input_shape=x_train.shape[1:], num_classes=y_test.shape[1])
        init_path = out / "initial_weights.h5" if is_chief else out / f".initial_weights.rank{rank}.h5"
        model.save_weights(str(init_path))
        model.load_weights(str(init_path))
        if not is_chief:
            init_path.unlink()
        model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    trainable, total = count_params(model)

    # -- resume --
    first_epoch = 0
    if args.resume:
        try:
            if args.resume == "auto":
                remove_stale_temps(ckpt_root, log=say)  # what saves cut short by a kill left behind
            ckpt = checkpointing.find_latest(ckpt_root, log=say) if args.resume == "auto" else Path(args.resume)
            if ckpt is None:
                say(f"resume: no valid checkpoint in {ckpt_root}; starting from scratch")
            else:
                with strategy.scope():
                    first_epoch = checkpointing.restore(ckpt, model)
                say(f"resume: restored {ckpt} (epoch {first_epoch} done)")
        except (CheckpointError, tf.errors.OpError, AssertionError) as exc:
            return fail(f"{args.resume}: cannot resume ({str(exc).splitlines()[0]})")
    if first_epoch >= args.epochs:
        return fail(f"{args.resume}: checkpoint has already done {first_epoch} of --epochs {args.epochs}")

    # -- data pipeline --
    global_batch = args.batch_size * world
    steps = pipeline.steps_per_epoch(len(x_train) // world if world > 1 else len(x_train), args.batch_size,
                                     args.eval_static or world > 1, args.train_steps)
    if steps == 0:
        return fail(f"{args.data_dir}: {len(x_train)} training images do not fill one batch of {global_batch}")
    if (args.eval_static or world > 1) and len(x_test) < global_batch:
        return fail(f"{args.data_dir}: {len(x_test)} test images do not fill one batch of {global_batch}")
    opts = dict(batch_size=args.batch_size, use_cutmix=not args.no_cutmix,
                drop_remainder=args.eval_static or world > 1, steps=steps)
    if world > 1:
        # each worker feeds its own shard at the per-device batch; the same step count everywhere
        def per_worker(_ctx):
            return pipeline.train_dataset(x_shard, y_shard, first_epoch, args.epochs, args.seed + rank, **opts)
        train_ds = strategy.distribute_datasets_from_function(per_worker)
    else:
        train_ds = pipeline.train_dataset(x_shard, y_shard, first_epoch, args.epochs, args.seed, **opts)
    # several workers: whole global batches only, so that every worker runs the same number of steps
    test_ds = pipeline.test_dataset(x_test, y_test, global_batch, drop_remainder=args.eval_static or world > 1)
    if world > 1:
        print(f"rank {rank}/{world}: {len(x_shard)} training images, shard sha256 "
              f"{hashlib.sha256(x_shard.tobytes()).hexdigest()[:16]}", flush=True)
    if args.save_samples and is_chief:
        from src.samples import save_grid
        sample_x, sample_y = next(iter(pipeline.train_epoch(x_shard, y_shard, 0, args.seed, 16,
                                                            use_cutmix=not args.no_cutmix)))
        png = save_grid(sample_x.numpy(), sample_y.numpy(), names, out / "cutmix_samples.png")
        say(f"wrote {png}")

    # -- callbacks: timing, checkpoints, summaries --
    meter = ThroughputMeter(global_batch, warmup_steps=steps if args.epochs - first_epoch > 1 else 1,
                            world_size=1)
    timer = TimeHistory(global_batch, args.log_steps, meter)
    scratch = ckpt_root if is_chief else out / f".scratch_rank{rank}"
    callbacks = [timer, CheckpointSaver(scratch, extra={"seed": args.seed, "batch_size": args.batch_size,
                                                        "cutmix": not args.no_cutmix},
                                        keep=args.keep_checkpoints)]
    if is_chief:
        callbacks += [SummaryWriter(out, timer, resume=first_epoch > 0),
                      ProgressLogger(steps * (args.epochs - first_epoch), global_batch, args.log_steps,
                                     replicas=strategy.num_replicas_in_sync)]
        if args.tensorboard:
            callbacks.append(keras.callbacks.TensorBoard(log_dir=str(out / "tensorboard")))

    # -- train: test set evaluated after every epoch, as the original --
    history = model.fit(train_ds, validation_data=test_ds, epochs=args.epochs, initial_epoch=first_epoch,
                        steps_per_epoch=steps, callbacks=callbacks, verbose=2 if is_chief else 0)

    if world > 1:
        digest = hashlib.sha256(b"".join(w.tobytes() for w in model.get_weights())).hexdigest()[:16]
        print(f"rank {rank}/{world}: final weights sha256 {digest}", flush=True)

    # -- save the trained model (the original never did) and write the record --
    # under MultiWorkerMirroredStrategy every worker must save, in the same order (saving reads variables
    # through collectives); only the chief's copy is kept
    target = out if is_chief else scratch
    atomic_write(target / "model.h5", lambda tmp: model.save(tmp, save_format="h5", include_optimizer=False))
    atomic_write_dir(target / "saved_model", lambda tmp: model.save(tmp, save_format="tf", include_optimizer=False))
    if not is_chief:
        shutil.rmtree(scratch, ignore_errors=True)
        return 0
    suffix = "" if not args.perf else ("_static_eval" if args.eval_static else "_dynamic_eval")
    case = case_name(NETWORK, args.batch_size, world, args.perf, suffix)
    h = history.history
    finish_run(output_dir=out, network=NETWORK, case=case, framework="tensorflow",
               framework_version=f"{tf.__version__} (tf-keras {keras.__version__})", device=device,
               rank_size=world, batch_size=args.batch_size, params=trainable, epochs=args.epochs, meter=meter,
               accuracy=h["val_accuracy"][-1], loss=h["loss"][-1], seed=args.seed,
               extra={"total_params": total, "precision": policy, "cutmix": not args.no_cutmix,
                      "eval_static": args.eval_static, "steps_per_epoch": steps, "first_epoch": first_epoch,
                      "val_loss": h["val_loss"][-1], "config": {k: v for k, v in vars(args).items()}})
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CheckpointError as exc:  # a save failed mid-run (a full disk): one line; the last checkpoint stays
        sys.exit(fail(exc))
