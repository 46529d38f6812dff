"""Train Tiny-DarkNet on an ImageNet-style folder.

Mirrors mindspore-ai/models research/cv/tinydarknet (train.py, config/imagenet_config.yaml): 500 epochs,
batch 128 per device, Momentum 0.9, lr 0.1 multi-step x0.3 at epochs 70/140/210/280, label smoothing 0.1,
loss scale 1024. The original reports top-1 58.7% / top-5 81.7% on ImageNet (Ascend 910 x8, 104 ms/step).

    python train.py --train_data_dir=/data/imagenet/train [--val_data_dir=... --run_eval=True] [--<key>=...]
"""
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import mindspore as ms
import mindspore.nn as nn
from mindspore.train import Model
from mindspore.train.loss_scale_manager import DynamicLossScaleManager, FixedLossScaleManager

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE), str(_HERE.parent)]  # src/ and the repo's common/ without any setup
from common import cli, cputune, events, throughput  # noqa: E402
from common.checkpoint import CheckpointError  # noqa: E402
from common.imagefolder import ImageFolderError, reader_error_line  # noqa: E402
from common.ms import CheckpointSeries, RankLog, StepMonitor, emit_initial_weights, load_ckpt, load_into  # noqa: E402
from common.ms.checkpoint import classes_meta  # noqa: E402
from common.ms.resume import agree_resume  # noqa: E402
from common.progress import Progress  # noqa: E402
from common.runrecord import KEYS_ACCURACY_FIRST, CaseLogSpec, case_name, finish_run  # noqa: E402
from common.throughput import ThroughputMeter  # noqa: E402
from src.CrossEntropySmooth import CrossEntropySmooth  # noqa: E402
from src.config import device_id_from_env, get_config  # noqa: E402
from src.dataset import create_dataset_imagenet, find_split, find_val_split, load_samples  # noqa: E402
from src.epoch_log import EpochLog  # noqa: E402
from src.lr_scheduler import warmup_cosine_annealing_lr, warmup_step_lr  # noqa: E402
from src.max_pool import resolve as resolve_max_pool  # noqa: E402
from src.tinydarknet import TinyDarkNet, count_params  # noqa: E402
from src.utils import (checkpoint_series, detect_device, global_step_of, is_distributed, resolve_amp,  # noqa: E402
                       resolve_leaky, restore_training, setup_context)

NETWORK = "TinyDarknet_for_MindSpore"
# the MindSpore original writes no ${CaseName}.log nor loss file: these are the Ascend ModelZoo form of the
# ResNet-50 and CutMix originals (TrainingTime in ms per step, every logged step loss in the loss file)
CASE_LOG = CaseLogSpec(keys=KEYS_ACCURACY_FIRST, batch_size="global", training_time="ms_per_step",
                       loss_file="train_{case}_loss.txt")


@dataclass
class Context(RankLog):
    """What setup() decided for this process: device, rank, where its files go."""
    device: str
    rank: int
    group_size: int
    leaky: str
    amp_level: str
    max_pool: str  # kernel | nn (src/max_pool.py)
    output_path: Path
    ckpt_dir: Path  # <ckpt_save_dir>/<rank>/: each rank saves its own checkpoints, as the original did
    checkpoints: CheckpointSeries  # train_tinydarknet_<dataset>-<epoch>_<step>.ckpt in ckpt_dir


def main(argv=None):
    args = parse_args(argv)
    ctx = setup(args)
    model = create_model(args, ctx)
    data = create_data(args, ctx)
    loss_fn, optimizer = create_loss(args), create_optimizer(args, model, data)
    trainer = create_trainer(args, model, loss_fn, optimizer, ctx.amp_level)
    state = resume(args, ctx, trainer, data)
    result = train(args, ctx, trainer, data, state)
    return summarize(args, ctx, result)


# ---- arguments, device, seed ----------------------------------------------------------------------------------
def parse_args(argv=None):
    return get_config(argv, description=__doc__.splitlines()[0], prog="train.py")


def setup(args):
    """Device (and the collective group when launched as one rank of several), seed, output folders, CPU tuning."""
    device = detect_device(args.device_target)
    rank, group_size = setup_context(device, device_id_from_env(args), is_distributed())
    ms.set_seed(args.seed)
    leaky = resolve_leaky(args.leaky_relu, device)
    auto = args.leaky_relu == "auto"
    cputune.record("leaky_relu", leaky, "rule" if auto else "user",
                   note="auto: mix on CPU, the original max on Ascend/GPU" if auto else "--leaky_relu")
    output_path = Path(args.output_path).resolve()
    ckpt_root = Path(args.ckpt_save_dir) if os.path.isabs(args.ckpt_save_dir) else output_path / args.ckpt_save_dir
    ckpt_dir = ckpt_root / str(rank)
    checkpoints = checkpoint_series(ckpt_dir, f"train_tinydarknet_{args.dataset_name}", args.keep_checkpoint_max,
                                    output_path, rank, world=group_size)
    amp_level = resolve_amp(args.amp_level, device)
    max_pool = resolve_max_pool(args.max_pool, device, args.image_size, amp_level)
    ctx = Context(device, rank, group_size, leaky, amp_level, max_pool, output_path, ckpt_dir, checkpoints)
    if ctx.primary:
        cputune.announce()  # the host's CPU and what was probed on it (oneDNN's ISA level: src/__init__.py)
    return ctx


# ---- model, data, loss, optimiser -----------------------------------------------------------------------------
def create_model(args, ctx):
    """The seeded Tiny-DarkNet (or --checkpoint_path's weights with --pre_trained); records its digest."""
    net = TinyDarkNet(num_classes=args.num_classes, leaky=ctx.leaky, max_pool=ctx.max_pool)
    if args.pre_trained:
        load_into(net, load_ckpt(args.checkpoint_path), args.checkpoint_path,
                  f"Tiny-DarkNet with num_classes={args.num_classes}")
    # every rank builds the same seeded weights (DATA_PARALLEL does not broadcast them): the digest lets a test
    # compare them across ranks and with a one-device run
    digest = emit_initial_weights(ctx.output_path, net, rank=ctx.rank)
    who = f"rank {ctx.rank}/{ctx.group_size}: " if ctx.group_size > 1 else ""
    print(f"{who}initial weights sha256 {digest}", flush=True)
    return net


def create_data(args, ctx):
    """The vetted train (and val) image lists, the class names and the steps per epoch; train_one_epoch builds
    each epoch's pipeline from them.

    Train numbers its non-empty class folders in sorted order; val is labelled through those names (not by its
    own folder list), so a class missing from val or an empty folder in train cannot shift the val labels, and
    a val folder training never saw stops the run with its path.
    """
    workers = args.num_parallel_workers or os.cpu_count() or 1
    train_dir = find_split(args.train_data_dir or args.data_path, "train")
    train, classes = load_samples(train_dir, args.check_images, args.skip_bad_images, workers, ctx.log)
    val_dir = find_val_split(args.val_data_dir, args.data_path, train_dir)
    val = (load_samples(val_dir, args.check_images, args.skip_bad_images, workers, ctx.log, classes=classes)[0]
           if val_dir else None)
    if args.run_eval and not val:
        ctx.log(f"warning: run_eval is on but no val folder was found next to {train_dir}; pass --val_data_dir")
    if len(classes) > args.num_classes:
        raise cli.RecipeError(f"{train_dir}: {len(classes)} class folders but num_classes is {args.num_classes}")
    per_rank = -(-len(train) // ctx.group_size)
    if per_rank < args.batch_size:
        raise cli.RecipeError(f"{train_dir}: {per_rank} training images per device, fewer than one batch of "
                              f"{args.batch_size}")
    steps_per_epoch = cli.steps_per_epoch(per_rank // args.batch_size, args.train_steps)
    ctx.log(f"train: {len(train)} images in {len(classes)} classes from {train_dir}; "
            f"{steps_per_epoch} steps/epoch x {args.epoch_size} epochs, batch {args.batch_size} x {ctx.group_size} "
            "device(s)" + (f"; val: {len(val)} images from {val_dir}" if val else ""))
    return SimpleNamespace(train=train, val=val, classes=classes, steps_per_epoch=steps_per_epoch)


def create_loss(args):
    smooth = args.label_smooth_factor if args.use_label_smooth else 0.0
    return CrossEntropySmooth(sparse=True, reduction="mean", smooth_factor=smooth, num_classes=args.num_classes)


def create_optimizer(args, model, data):
    """Momentum over the per-step LR schedule, without weight decay on biases and BN gamma/beta (the original's
    parameter groups); with the fixed loss scale it divides the gradients by that scale."""
    no_decay = [p for p in model.trainable_params() if p.name.endswith((".bias", ".gamma", ".beta"))]
    decay = [p for p in model.trainable_params() if not p.name.endswith((".bias", ".gamma", ".beta"))]
    loss_scale = 1.0 if args.is_dynamic_loss_scale else args.loss_scale
    return nn.Momentum([{"params": no_decay, "weight_decay": 0.0}, {"params": decay}],
                       learning_rate=ms.Tensor(lr_schedule(args, data.steps_per_epoch)), momentum=args.momentum,
                       weight_decay=args.weight_decay, loss_scale=loss_scale)


def lr_schedule(args, steps_per_epoch):
    """The learning rate of every step of the run (epoch_size epochs)."""
    if args.lr_scheduler == "exponential":  # the original's name for multi-step decay
        return warmup_step_lr(args.lr_init, args.lr_epochs, steps_per_epoch, args.warmup_epochs, args.epoch_size,
                              gamma=args.lr_gamma)
    return warmup_cosine_annealing_lr(args.lr_init, steps_per_epoch, args.warmup_epochs, args.epoch_size,
                                      args.T_max, args.eta_min)


def create_trainer(args, model, loss_fn, optimizer, amp_level):
    """MindSpore's Model with the original's AMP level and loss-scale manager (its train_network is the step)."""
    if args.is_dynamic_loss_scale:
        scale_manager = DynamicLossScaleManager(init_loss_scale=65536, scale_factor=2, scale_window=2000)
    else:
        scale_manager = FixedLossScaleManager(args.loss_scale, drop_overflow_update=False)
    return Model(model, loss_fn=loss_fn, optimizer=optimizer, amp_level=amp_level, loss_scale_manager=scale_manager,
                 metrics={"top_1_accuracy", "top_5_accuracy"})


# ---- resume ---------------------------------------------------------------------------------------------------
def resume(args, ctx, trainer, data):
    """--resume: weights, momentum, global step (hence LR position) and loss scale; emits the "resume" event.
    A checkpoint trained on other class names than ``data``'s stops the run (one line).

    ``auto`` in a job of several ranks: the ranks agree (common.ms.resume: their lists of checkpoint steps,
    all-gathered) on the newest global step every rank holds, and each rank loads its own file of that step
    (its own BatchNorm statistics). A checkpoint of a job with another rank count stops the run (one line)."""
    path, params = args.resume or None, None
    if path == "auto":
        found = agree_resume(ctx.checkpoints, lambda p: global_step_of(ctx.checkpoints, p), ctx.group_size,
                             ctx.rank)
        path, params = (found.path, found.params) if found else (None, None)
        if path is None:
            print(f"resume: no valid checkpoint in {ctx.ckpt_dir}, starting from scratch")
    epoch, global_step = (restore_training(trainer.train_network, path, ctx.group_size, params, data.classes)
                          if path else (0, 0))
    if path:
        print(f"resume: continuing from {path} at epoch {epoch}")
    if epoch >= args.epoch_size:
        raise cli.RecipeError(f"resume checkpoint is at epoch {epoch}, nothing left to train "
                              f"(epoch_size {args.epoch_size})")
    events.emit(ctx.output_path, "resume", rank=ctx.rank, checkpoint=str(path) if path else None, epoch=epoch,
                global_step=global_step)
    return SimpleNamespace(start_epoch=epoch, global_step=global_step)


# ---- the training loop ----------------------------------------------------------------------------------------
def train(args, ctx, trainer, data, state):
    """Every epoch: train_one_epoch, validate (when due), save_checkpoint (when due), the epoch's record."""
    spe, epochs_to_run = data.steps_per_epoch, args.epoch_size - state.start_epoch
    meter = ThroughputMeter(args.batch_size, warmup_steps=throughput.warmup_steps(spe, epochs_to_run),
                            world_size=ctx.group_size)
    lr = lr_schedule(args, spe)
    # every rank reports its own (local) losses into its own log, as the original's LossMonitor did
    progress = Progress(epochs_to_run * spe, args.batch_size, every=args.log_every)
    # timed from the previous step's end, so input-pipeline stalls count
    monitor = StepMonitor(meter, progress, lambda step: float(lr[step]), events_dir=ctx.output_path, rank=ctx.rank,
                          count_data_wait=True, hint="lower --lr_init, or --is_dynamic_loss_scale=True under AMP; "
                                                     "the last checkpoint is kept")
    epoch_log = (EpochLog(ctx.ckpt_dir, f"{NETWORK} ({args.dataset_name})", NETWORK, state.start_epoch > 0,
                          args.tensorboard) if ctx.primary else None)
    loss = top1 = top5 = None
    for epoch in range(state.start_epoch, args.epoch_size):
        loss, seconds = train_one_epoch(args, ctx, trainer, data, epoch, monitor)
        last = epoch + 1 == args.epoch_size
        top1 = top5 = None
        if data.val and ctx.primary and (last or (args.run_eval and (epoch + 1) % args.eval_interval == 0)):
            top1, top5 = validate(args, ctx, trainer, data, epoch + 1)
        if (epoch + 1) % args.save_checkpoint_epochs == 0 or last:
            save_checkpoint(ctx, trainer, epoch + 1, spe, data.classes)
        if epoch_log is not None:
            epoch_log.add(epoch + 1, loss, top1, top5, float(lr[min(len(lr) - 1, (epoch + 1) * spe - 1)]),
                          spe * args.batch_size * ctx.group_size / seconds, seconds)
    if epoch_log is not None:
        epoch_log.close()
    return SimpleNamespace(meter=meter, loss=loss, top1=top1, top5=top5, steps_per_epoch=spe,
                           start_epoch=state.start_epoch, params=count_params(trainer.predict_network))


def train_one_epoch(args, ctx, trainer, data, epoch, monitor):
    """One Model.train call over epoch ``epoch`` (from 0); returns (mean loss, seconds).

    The pipeline is keyed on (seed, epoch), so data order and augmentation do not depend on where a run was
    resumed; the graph is compiled by the first call and reused.
    """
    t0 = time.perf_counter()
    pipeline = create_dataset_imagenet(data.train, True, args.batch_size, args.image_size, args.seed, epoch,
                                       ctx.rank, ctx.group_size, args.num_parallel_workers, data.steps_per_epoch,
                                       args.augment)
    monitor.begin_epoch(epoch + 1, epoch * data.steps_per_epoch)
    trainer.train(epoch + 1, pipeline, callbacks=[monitor], dataset_sink_mode=False, initial_epoch=epoch)
    monitor.progress.end_epoch()
    seconds = time.perf_counter() - t0
    print(f"epoch: {epoch + 1} step: {data.steps_per_epoch}, loss is {monitor.last_loss:.6f}")
    print(f"epoch time: {seconds * 1000:.3f} ms, per step time: {seconds * 1000 / data.steps_per_epoch:.3f} ms")
    return monitor.epoch_loss, seconds


def validate(args, ctx, trainer, data, epoch):
    """Top-1 and top-5 on the val images (every image: the last partial batch counts)."""
    pipeline = create_dataset_imagenet(data.val, False, args.batch_size, args.image_size, args.seed,
                                       num_parallel_workers=args.num_parallel_workers)
    acc = trainer.eval(pipeline, dataset_sink_mode=False)
    top1, top5 = acc["top_1_accuracy"], acc["top_5_accuracy"]
    ctx.log(f"epoch {epoch} eval: top-1 {top1:.4f} top-5 {top5:.4f}")
    return top1, top5


def save_checkpoint(ctx, trainer, epochs_done, steps_per_epoch, classes):
    """An atomic, CRC-checked checkpoint of the training cell (weights, momentum, global step, loss scale) and
    the class names (label = index; eval.py labels val folders through them); emits the "checkpoint" event once
    it is complete, then prunes to keep_checkpoint_max."""
    global_step = epochs_done * steps_per_epoch
    path = ctx.checkpoints.save(trainer.train_network, epochs_done, global_step, step=steps_per_epoch,
                                meta={"epoch_num": epochs_done, "step_num": global_step, **classes_meta(classes)})
    print(f"saved checkpoint {path}")
    return path


# ---- final result ---------------------------------------------------------------------------------------------
def summarize(args, ctx, result):
    """Rank 0: the accuracy line, the banner and the run records (<CaseName>.log / .json, events)."""
    ctx.log("train success")
    if not ctx.primary:
        return 0
    if result.top1 is not None:
        print(f"accuracy:  {{'top_1_accuracy': {result.top1}, 'top_5_accuracy': {result.top5}}}")
    finish_run(output_dir=ctx.output_path, network=NETWORK,
               case=case_name(NETWORK, args.batch_size, ctx.group_size, args.perf), framework="mindspore",
               framework_version=ms.__version__, device=ctx.device.lower(), rank_size=ctx.group_size,
               batch_size=args.batch_size, params=result.params, epochs=args.epoch_size, meter=result.meter,
               accuracy=result.top1, loss=result.loss, seed=args.seed, spec=CASE_LOG,
               extra={"top5": result.top5, "amp_level": ctx.amp_level, "image_size": args.image_size,
                      "num_classes": args.num_classes, "steps_per_epoch": result.steps_per_epoch,
                      "start_epoch": result.start_epoch, "checkpoint_dir": str(ctx.ckpt_dir),
                      "config": dict(vars(args))})
    return 0


if __name__ == "__main__":
    cli.run(main, errors=(CheckpointError, ImageFolderError), translate=reader_error_line)
