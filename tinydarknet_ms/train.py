"""Train Tiny-DarkNet on an ImageNet-style folder.

Mirrors mindspore-ai/models research/cv/tinydarknet (train.py, config/imagenet_config.yaml): 500 epochs,
batch 128 per device, Momentum 0.9, lr 0.1 multi-step x0.3 at epochs 70/140/210/280, label smoothing 0.1,
loss scale 1024. The original reports top-1 58.7% / top-5 81.7% on ImageNet (Ascend 910 x8, 104 ms/step).

    python train.py --train_data_dir=/data/imagenet/train [--val_data_dir=... --run_eval=True] [--<key>=...]
"""
import os
import sys
import time
from pathlib import Path

import numpy as np
import mindspore as ms
import mindspore.nn as nn
from mindspore.train import Callback, Model
from mindspore.train.loss_scale_manager import DynamicLossScaleManager, FixedLossScaleManager

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE), str(_HERE.parent)]  # src/ and the repo's common/ without any setup
from common.checkpoint import CheckpointError  # noqa: E402
from common.imagefolder import ImageFolderError  # noqa: E402
from common.progress import Progress  # noqa: E402
from common import cputune  # noqa: E402
from common.runrecord import case_name, finish_run  # noqa: E402
from common.summary import EpochSummary, plot_curves  # noqa: E402
from common.throughput import ThroughputMeter  # noqa: E402
from src.CrossEntropySmooth import CrossEntropySmooth  # noqa: E402
from src.config import device_id_from_env, get_config  # noqa: E402
from src.dataset import create_dataset_imagenet, find_split, load_samples  # noqa: E402
from src.lr_scheduler import warmup_cosine_annealing_lr, warmup_step_lr  # noqa: E402
from src.tinydarknet import TinyDarkNet, count_params  # noqa: E402
from src.utils import (ckpt_name, detect_device, fail, find_resume, is_distributed, load_into,  # noqa: E402
                       prune_checkpoints, read_checkpoint, resolve_amp, resolve_leaky, save_checkpoint_atomic,
                       setup_context)

NETWORK = "TinyDarknet_for_MindSpore"


def lr_steps_imagenet(cfg, steps_per_epoch):
    if cfg.lr_scheduler == "exponential":  # the original's name for multi-step decay
        return warmup_step_lr(cfg.lr_init, cfg.lr_epochs, steps_per_epoch, cfg.warmup_epochs, cfg.epoch_size,
                              gamma=cfg.lr_gamma)
    return warmup_cosine_annealing_lr(cfg.lr_init, steps_per_epoch, cfg.warmup_epochs, cfg.epoch_size,
                                      cfg.T_max, cfg.eta_min)


def get_param_groups(network):
    """No weight decay on biases and BN gamma/beta, as the original."""
    no_decay = [p for p in network.trainable_params() if p.name.endswith((".bias", ".gamma", ".beta"))]
    decay = [p for p in network.trainable_params() if not p.name.endswith((".bias", ".gamma", ".beta"))]
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay}]


class StepMonitor(Callback):
    """Per-step timing (data wait included), progress lines and the epoch's mean loss."""

    def __init__(self, meter, progress, lr, steps_per_epoch):
        super().__init__()
        self.meter, self.progress, self.lr, self.steps_per_epoch = meter, progress, lr, steps_per_epoch
        self.losses, self._last = [], 0.0

    def on_train_epoch_begin(self, run_context):
        self.losses = []
        self._last = time.perf_counter()

    def on_train_step_end(self, run_context):
        cb = run_context.original_args()
        now = time.perf_counter()
        self.meter.record(now - self._last)
        self._last = now
        out = cb.net_outputs
        loss = float((out[0] if isinstance(out, (tuple, list)) else out).asnumpy())
        if not np.isfinite(loss):
            fail(f"loss became {loss} at epoch {cb.cur_epoch_num} step {cb.cur_step_num} (lower --lr_init, or "
                 f"--is_dynamic_loss_scale=True under AMP); the last checkpoint is kept", code=1)
        self.losses.append(loss)
        step_in_epoch = (cb.cur_step_num - 1) % self.steps_per_epoch + 1
        self.progress.update(cb.cur_epoch_num, step_in_epoch, loss, float(self.lr[cb.cur_step_num - 1]))


def evaluate(model, samples, cfg):
    data = create_dataset_imagenet(samples, False, cfg.batch_size, cfg.image_size, cfg.seed,
                                   num_parallel_workers=cfg.num_parallel_workers)
    return model.eval(data, dataset_sink_mode=False)


def main(argv=None):
    # ---- arguments ---------------------------------------------------------------------------------------
    cfg = get_config(argv, description=__doc__.splitlines()[0], prog="train.py")

    # ---- device, distribution, seed ----------------------------------------------------------------------
    device = detect_device(cfg.device_target)
    rank, group_size = setup_context(device, device_id_from_env(cfg), is_distributed())
    ms.set_seed(cfg.seed)
    primary = rank == 0
    log = print if primary else (lambda *_a, **_k: None)
    leaky = resolve_leaky(cfg.leaky_relu, device)
    cputune.record("leaky_relu", leaky, "rule" if cfg.leaky_relu == "auto" else "user",
                   note="auto: mix on CPU, the original max on Ascend/GPU" if cfg.leaky_relu == "auto" else "--leaky_relu")
    if primary:
        cputune.announce()  # the host's CPU and what was probed on it (oneDNN's ISA level: src/__init__.py)

    # ---- data --------------------------------------------------------------------------------------------
    try:
        train_dir = find_split(cfg.train_data_dir or cfg.data_path, "train")
        train_samples, classes = load_samples(train_dir, cfg.check_images, cfg.skip_bad_images,
                                              cfg.num_parallel_workers or os.cpu_count() or 1, log)
        val_dir = _optional_val_dir(cfg, train_dir)
        val_samples = (load_samples(val_dir, cfg.check_images, cfg.skip_bad_images,
                                    cfg.num_parallel_workers or os.cpu_count() or 1, log)[0] if val_dir else None)
    except ImageFolderError as exc:
        fail(str(exc))
    if cfg.run_eval and not val_samples:
        log(f"warning: run_eval is on but no val folder was found next to {train_dir}; pass --val_data_dir")
    if len(classes) > cfg.num_classes:
        fail(f"{train_dir}: {len(classes)} class folders but num_classes is {cfg.num_classes}")
    per_rank = -(-len(train_samples) // group_size)
    steps_per_epoch = per_rank // cfg.batch_size
    if steps_per_epoch == 0:
        fail(f"{train_dir}: {per_rank} training images per device, fewer than one batch of {cfg.batch_size}")
    if cfg.train_steps:
        steps_per_epoch = min(steps_per_epoch, cfg.train_steps)
    log(f"train: {len(train_samples)} images in {len(classes)} classes from {train_dir}; "
        f"{steps_per_epoch} steps/epoch x {cfg.epoch_size} epochs, batch {cfg.batch_size} x {group_size} device(s)"
        + (f"; val: {len(val_samples)} images from {val_dir}" if val_samples else ""))

    # ---- network, loss, optimiser, model -----------------------------------------------------------------
    net = TinyDarkNet(num_classes=cfg.num_classes, leaky=leaky)
    if cfg.pre_trained:
        _load_or_fail(net, cfg.checkpoint_path)
    # every rank builds the same seeded weights (DATA_PARALLEL does not broadcast them): the digest lets a test
    # compare them across ranks and with a one-device run
    who = f"rank {rank}/{group_size}: " if group_size > 1 else ""
    print(f"{who}initial weights sha256 {_digest(net)}", flush=True)
    lr = lr_steps_imagenet(cfg, steps_per_epoch)
    loss_scale = 1.0 if cfg.is_dynamic_loss_scale else cfg.loss_scale
    opt = nn.Momentum(get_param_groups(net), learning_rate=ms.Tensor(lr), momentum=cfg.momentum,
                      weight_decay=cfg.weight_decay, loss_scale=loss_scale)
    smooth = cfg.label_smooth_factor if cfg.use_label_smooth else 0.0
    loss_fn = CrossEntropySmooth(sparse=True, reduction="mean", smooth_factor=smooth, num_classes=cfg.num_classes)
    if cfg.is_dynamic_loss_scale:
        scale_manager = DynamicLossScaleManager(init_loss_scale=65536, scale_factor=2, scale_window=2000)
    else:
        scale_manager = FixedLossScaleManager(cfg.loss_scale, drop_overflow_update=False)
    amp_level = resolve_amp(cfg.amp_level, device)
    model = Model(net, loss_fn=loss_fn, optimizer=opt, amp_level=amp_level, loss_scale_manager=scale_manager,
                  metrics={"top_1_accuracy", "top_5_accuracy"})

    # ---- output folders and resume -----------------------------------------------------------------------
    output_path = Path(cfg.output_path).resolve()
    ckpt_root = Path(cfg.ckpt_save_dir) if os.path.isabs(cfg.ckpt_save_dir) else output_path / cfg.ckpt_save_dir
    ckpt_dir = ckpt_root / str(rank)
    prefix = f"train_tinydarknet_{cfg.dataset_name}"
    start_epoch = 0
    if cfg.resume:
        start_epoch = _resume(model, cfg.resume, ckpt_dir, prefix, print)
    if start_epoch >= cfg.epoch_size:
        fail(f"resume checkpoint is at epoch {start_epoch}, nothing left to train (epoch_size {cfg.epoch_size})")

    # ---- monitors ----------------------------------------------------------------------------------------
    epochs_to_run = cfg.epoch_size - start_epoch
    # images/sec excludes graph compilation: the first epoch when there are several, else the first 2 steps
    warmup = steps_per_epoch if epochs_to_run > 1 else min(2, steps_per_epoch - 1)
    meter = ThroughputMeter(cfg.batch_size, warmup_steps=warmup, world_size=group_size)
    # every rank reports its own (local) losses into its own log, as the original's LossMonitor did
    progress = Progress(epochs_to_run * steps_per_epoch, cfg.batch_size, every=cfg.log_every)
    monitor = StepMonitor(meter, progress, lr, steps_per_epoch)
    summary = EpochSummary(ckpt_dir / "summary.csv", resume=start_epoch > 0) if primary else None
    writer = _summary_writer(ckpt_dir / "tensorboard") if cfg.tensorboard and primary else None

    # ---- training loop -----------------------------------------------------------------------------------
    # one model.train call per epoch with a pipeline keyed on (seed, epoch), so data order and augmentation
    # do not depend on where a run was resumed; the graph is compiled once and reused
    loss = top1 = None
    for epoch in range(start_epoch, cfg.epoch_size):
        t0 = time.perf_counter()
        data = create_dataset_imagenet(train_samples, True, cfg.batch_size, cfg.image_size, cfg.seed, epoch,
                                       rank, group_size, cfg.num_parallel_workers, steps_per_epoch, cfg.augment)
        model.train(epoch + 1, data, callbacks=[monitor], dataset_sink_mode=False, initial_epoch=epoch)
        progress.end_epoch()
        epoch_time = time.perf_counter() - t0
        loss = float(np.mean(monitor.losses))
        print(f"epoch: {epoch + 1} step: {steps_per_epoch}, loss is {monitor.losses[-1]:.6f}")
        print(f"epoch time: {epoch_time * 1000:.3f} ms, per step time: {epoch_time * 1000 / steps_per_epoch:.3f} ms")
        top1 = top5 = None
        last = epoch + 1 == cfg.epoch_size
        if val_samples and primary and ((cfg.run_eval and (epoch + 1) % cfg.eval_interval == 0) or last):
            acc = evaluate(model, val_samples, cfg)
            top1, top5 = acc["top_1_accuracy"], acc["top_5_accuracy"]
            log(f"epoch {epoch + 1} eval: top-1 {top1:.4f} top-5 {top5:.4f}")
        # each rank saves into its own <ckpt_save_dir>/<rank>/ as the original did
        if (epoch + 1) % cfg.save_checkpoint_epochs == 0 or last:
            path = ckpt_dir / ckpt_name(prefix, epoch + 1, steps_per_epoch)
            try:
                save_checkpoint_atomic(model.train_network, path, {"epoch_num": epoch + 1,
                                                                   "step_num": (epoch + 1) * steps_per_epoch})
            except CheckpointError as exc:
                fail(str(exc))
            prune_checkpoints(ckpt_dir, prefix, cfg.keep_checkpoint_max)
            print(f"saved checkpoint {path}")
        if primary:
            lr_now = float(lr[min(len(lr) - 1, (epoch + 1) * steps_per_epoch - 1)])
            summary.add(epoch + 1, train_loss=loss, eval_top1=top1, eval_top5=top5, lr=lr_now,
                        images_per_sec=steps_per_epoch * cfg.batch_size * group_size / epoch_time,
                        time_sec=epoch_time)
            plot_curves(summary.path, ckpt_dir / "curves.png", title=f"{NETWORK} ({cfg.dataset_name})",
                        labels=[NETWORK])
            if writer is not None:
                _record_scalars(writer, epoch + 1, loss=loss, lr=lr_now, top1=top1, top5=top5)

    # ---- final result ------------------------------------------------------------------------------------
    if writer is not None:
        writer.close()
    log("train success")
    if primary:
        if top1 is not None:
            log(f"accuracy:  {{'top_1_accuracy': {top1}, 'top_5_accuracy': {top5}}}")
        perf = bool(cfg.train_steps)
        finish_run(output_dir=output_path, network=NETWORK,
                   case=case_name(NETWORK, cfg.batch_size, group_size, perf), framework="mindspore",
                   framework_version=ms.__version__, device=device.lower(), rank_size=group_size,
                   batch_size=cfg.batch_size, params=count_params(net), epochs=cfg.epoch_size, meter=meter,
                   accuracy=top1, loss=loss, seed=cfg.seed,
                   extra={"top5": top5, "amp_level": amp_level, "image_size": cfg.image_size,
                          "num_classes": cfg.num_classes, "steps_per_epoch": steps_per_epoch,
                          "start_epoch": start_epoch, "checkpoint_dir": str(ckpt_dir),
                          "config": {k: v for k, v in vars(cfg).items()}})
    return 0


def _digest(net):
    import hashlib
    h = hashlib.sha256()
    for p in net.get_parameters():
        h.update(p.asnumpy().tobytes())
    return h.hexdigest()[:16]


def _optional_val_dir(cfg, train_dir):
    if cfg.val_data_dir:
        return find_split(cfg.val_data_dir, "val")
    base = cfg.data_path or str(Path(train_dir).parent)
    try:
        val = find_split(base, "val")
    except ImageFolderError:
        return None
    return val if Path(val).resolve() != Path(train_dir).resolve() else None


def _load_or_fail(net, path):
    try:
        params = read_checkpoint(path)
    except CheckpointError as exc:
        fail(str(exc))
    load_into(net, params, path)


def _resume(model, resume, ckpt_dir, prefix, log):
    """Restore weights, momentum, global step (hence LR position) and loss scale; return the epoch reached."""
    if resume == "auto":
        path = find_resume(ckpt_dir, prefix, log=log)
        if path is None:
            log(f"resume: no valid checkpoint in {ckpt_dir}, starting from scratch")
            return 0
    else:
        path = resume
    try:
        params = read_checkpoint(path)
    except CheckpointError as exc:
        fail(str(exc))
    if "epoch_num" not in params:
        fail(f"{path}: no epoch_num in this checkpoint, it was not written by train.py (use pre_trained instead)")
    epoch = int(params.pop("epoch_num").asnumpy())
    params.pop("step_num", None)
    load_into(model.train_network, params, path)
    log(f"resume: continuing from {path} at epoch {epoch}")
    return epoch


def _summary_writer(directory):
    from mindspore.train.summary import SummaryRecord
    directory.mkdir(parents=True, exist_ok=True)
    return SummaryRecord(str(directory))


def _record_scalars(writer, epoch, **values):
    for name, value in values.items():
        if value is not None:
            writer.add_value("scalar", name, ms.Tensor(float(value), ms.float32))
    writer.record(epoch)
    writer.flush()


if __name__ == "__main__":
    sys.exit(main())
