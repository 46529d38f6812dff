"""Train ZFNet, SPPNet single-size or SPPNet multi-size on an ImageNet-style folder with MindSpore.

Mirrors mindspore-ai/models ``research/cv/SPPNet`` (commit eab643f5): graph mode, ``Model`` with momentum SGD,
warm-up + cosine LR, fixed loss scale 1024, top-1/top-5 evaluation after each epoch and ``best.ckpt``.
The original reports ImageNet top-1 0.648 (zfnet), 0.649 (sppnet_single), 0.644 (sppnet_mult).
Every run ends with the ModelZoo banner and writes ``<case>.log`` / ``<case>.json`` (common.runrecord).
"""
import argparse
import math
import os
import sys
import time
from pathlib import Path

# `common` lives at the repository root; the shell scripts put it on PYTHONPATH, a bare `python train.py` may not
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# argparse types ----------------------------------------------------------------------------------------


def str2bool(value):
    if isinstance(value, bool):
        return value
    v = str(value).strip().lower()
    if v in ('1', 'true', 'yes', 'y', 'on'):
        return True
    if v in ('0', 'false', 'no', 'n', 'off'):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got '{value}'")


def positive_int(value):
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{value}'")
    return n


def build_parser():
    p = argparse.ArgumentParser(description='Train ZFNet / SPPNet (MindSpore).')
    # the original's flags
    p.add_argument('--train_model', default='sppnet_single', choices=['zfnet', 'sppnet_single', 'sppnet_mult'])
    p.add_argument('--train_path', default='./imagenet_original/train',
                   help='training folder (class sub-folders) or its parent holding train/')
    p.add_argument('--eval_path', default='./imagenet_original/val',
                   help='evaluation folder (class sub-folders) or its parent holding val/')
    p.add_argument('--device_target', default='auto', help='Ascend | GPU | CPU | auto (Ascend, else GPU, else CPU)')
    p.add_argument('--ckpt_path', default='./ckpt', help='folder for best.ckpt, epoch checkpoints, summary.csv')
    p.add_argument('--dataset_sink_mode', type=str2bool, default=None,
                   help='sink the dataset into the device graph (default: true on Ascend/GPU, false on CPU)')
    p.add_argument('--sink_size', type=int, default=-1, help='steps per epoch; -1 = the whole dataset')
    p.add_argument('--device_id', type=int, default=int(os.environ.get('DEVICE_ID', 0)))
    p.add_argument('--device_num', type=positive_int, default=1)
    p.add_argument('--is_distributed', type=int, default=0, choices=[0, 1])
    # ours (defaults = the original's values from src/config.py)
    p.add_argument('--epoch_size', type=positive_int, default=None, help='epochs (default: the model config)')
    p.add_argument('--batch_size', type=positive_int, default=None, help='per-device batch (default: config)')
    p.add_argument('--lr_init', type=float, default=None, help='base learning rate (default: config)')
    p.add_argument('--warmup_epochs', type=float, default=None, help='linear warm-up epochs (default: config)')
    p.add_argument('--num_classes', type=positive_int, default=None,
                   help='classifier outputs (default: the number of class folders in --train_path)')
    p.add_argument('--image_size', type=positive_int, default=224,
                   help='training/eval crop side; sppnet_mult alternates it with 180/224 of it')
    p.add_argument('--keep_prob', type=float, default=None, help='dropout keep probability (default: config)')
    p.add_argument('--init', default='normal', choices=['normal', 'he'],
                   help="weight init: 'normal' = the original's N(0, 0.01); 'he' (opt-in) learns small data faster")
    p.add_argument('--augment', type=str2bool, default=True,
                   help='the original training augmentation; false = eval transforms (tiny smoke/learning runs)')
    p.add_argument('--run_eval', type=str2bool, default=True,
                   help='evaluate after epochs (false: no eval, no best.ckpt; for throughput-only runs)')
    p.add_argument('--seed', type=int, default=None, help='global and dataset seed (default 44)')
    p.add_argument('--amp_level', default='auto', choices=['auto', 'O0', 'O2', 'O3'],
                   help='mixed precision; auto = O2 on Ascend/GPU as the original, O0 on CPU')
    p.add_argument('--gradients_mean', type=str2bool, default=True,
                   help='distributed: average gradients over ranks (false = sum them, as the original)')
    p.add_argument('--resume', default=None, help="checkpoint to resume from, or 'auto' (newest valid in --ckpt_path)")
    p.add_argument('--keep_checkpoint_max', type=positive_int, default=2, help='epoch checkpoints kept for resume')
    p.add_argument('--eval_interval', type=positive_int, default=1, help='evaluate every N epochs (and the last)')
    p.add_argument('--skip_bad_images', action='store_true',
                   help='skip (and list) unreadable images instead of stopping')
    p.add_argument('--vet_images', type=str2bool, default=True,
                   help='decode every image once before training to find bad files early')
    p.add_argument('--workers', type=positive_int, default=None, help='data pipeline threads')
    p.add_argument('--output_path', default=None, help='folder for <case>.log / <case>.json (default: --ckpt_path)')
    p.add_argument('--performance', action='store_true', help="name the run record '..._perf' (performance case)")
    p.add_argument('--tensorboard', action='store_true',
                   help='also write MindSpore summary files (loss, lr, accuracy) under <ckpt_path>/summary')
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    import numpy as np
    import mindspore as ms
    import mindspore.dataset as mds
    from mindspore import Tensor, nn
    from mindspore.communication import get_group_size, get_rank, init
    from mindspore.train import Model
    from mindspore.train.loss_scale_manager import DynamicLossScaleManager, FixedLossScaleManager

    from common import cputune
    from common.checkpoint import CheckpointError
    from common.imagefolder import ImageFolderError
    from common.progress import Progress
    from common.runrecord import case_name, finish_run
    from common.summary import EpochSummary, plot_curves
    from common.throughput import ThroughputMeter

    from src.config import get_config
    from src.dataset import create_dataset_imagenet, load_split, second_size
    from src.eval_callback import EvalCallBack
    from src.generator_lr import warmup_cosine_annealing_lr
    from src.get_param_groups import get_param_groups
    from src.monitor import StepMonitor
    from src.sppnet import SppNet, count_params, min_image_size
    from src.utils import (default_amp_level, epoch_checkpoints, find_resume, load_ckpt, load_into, meta_value,
                           resolve_device_target, save_ckpt)

    cfg = get_config(args.train_model)
    for key in ('epoch_size', 'batch_size', 'lr_init', 'warmup_epochs', 'keep_prob', 'seed'):
        if getattr(args, key) is not None:
            setattr(cfg, key, getattr(args, key))
    if cfg.warmup_epochs < 0 or cfg.lr_init <= 0:
        raise ValueError("--warmup_epochs must be >= 0 and --lr_init > 0")
    if not 0.0 < cfg.keep_prob <= 1.0:
        raise ValueError(f"--keep_prob must be in (0, 1], got {cfg.keep_prob}")
    if args.image_size < min_image_size(args.train_model):
        raise ValueError(f"--image_size {args.image_size} is too small for {args.train_model} "
                         f"(minimum {min_image_size(args.train_model)})")

    # device, distribution, seeds ------------------------------------------------------------------------
    target = resolve_device_target(args.device_target)
    ms.set_context(mode=ms.GRAPH_MODE)
    if args.is_distributed and target != 'Ascend':
        ms.set_device(target)  # msrun gives each worker its local device
    else:
        ms.set_device(target, args.device_id)
    rank, group_size = 0, 1
    if args.is_distributed:
        init()  # HCCL on Ascend (rank table), NCCL on GPU, MindSpore's CPU collectives under msrun
        rank, group_size = get_rank(), get_group_size()
        if args.device_num not in (1, group_size):
            raise ValueError(f"--device_num {args.device_num} but the job has {group_size} ranks")
        ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, device_num=group_size,
                                     gradients_mean=args.gradients_mean)
    primary = rank == 0
    log = print if primary else (lambda *a, **k: None)
    if primary:
        cputune.announce()  # the host's CPU and what was probed on it (oneDNN's ISA level: src/__init__.py)
    ms.set_seed(cfg.seed)
    mds.config.set_seed(cfg.seed)
    amp_level = default_amp_level(target) if args.amp_level == 'auto' else args.amp_level
    sink = (target != 'CPU') if args.dataset_sink_mode is None else args.dataset_sink_mode

    # data ------------------------------------------------------------------------------------------------
    train_samples, classes = load_split(args.train_path, 'train', args.vet_images, args.skip_bad_images, log)
    eval_samples, eval_classes = load_split(args.eval_path, 'val', args.vet_images, args.skip_bad_images, log)
    if eval_classes != classes:
        raise ImageFolderError(f"{args.eval_path}: class folders differ from {args.train_path} "
                               f"({len(eval_classes)} vs {len(classes)})")
    num_classes = args.num_classes or len(classes)
    if len(classes) > num_classes:
        raise ImageFolderError(f"{args.train_path}: {len(classes)} class folders but --num_classes {num_classes}")
    sizes = [args.image_size]
    if args.train_model == 'sppnet_mult':
        sizes.append(second_size(args.image_size))
        if sizes[1] < min_image_size(args.train_model):
            raise ValueError(f"--image_size {args.image_size}: its small size {sizes[1]} is below the minimum")
    shards = dict(num_shards=group_size, shard_id=rank) if group_size > 1 else {}
    per_pass = len(train_samples) // group_size // cfg.batch_size
    if per_pass == 0:
        raise ImageFolderError(f"{args.train_path}: {len(train_samples)} images over {group_size} rank(s) give no "
                               f"batch of {cfg.batch_size}; lower --batch_size")
    steps_per_epoch = args.sink_size if args.sink_size > 0 else per_pass

    def train_dataset(epoch):
        # a fresh pipeline per epoch, seeded by the epoch, so a resumed run sees the same data order
        mds.config.set_seed(cfg.seed + epoch)
        small = args.train_model == 'sppnet_mult' and epoch % 2 == 1
        return create_dataset_imagenet(train_samples, cfg.batch_size, args.train_model, True, args.image_size,
                                       resize_to=sizes[1] if small else None, workers=args.workers,
                                       steps=steps_per_epoch, augment=args.augment, **shards), \
            (sizes[1] if small else sizes[0])

    def eval_dataset():
        return create_dataset_imagenet(eval_samples, cfg.batch_size, args.train_model, False, args.image_size,
                                       workers=args.workers)

    if group_size > 1:
        # every rank says what it trains on, so a launcher test can check that the shards differ
        image, label = next(train_dataset(0)[0].create_tuple_iterator(output_numpy=True))
        print(f"rank {rank}/{group_size}: first batch sha256 {_digest([image, label])}", flush=True)

    # network, loss, optimiser, schedule ------------------------------------------------------------------
    net = SppNet(num_classes, 'train', True, args.train_model, args.image_size, keep_prob=cfg.keep_prob,
                 init=args.init)
    n_params = count_params(net)
    # every rank starts from the same seeded weights (DATA_PARALLEL does not broadcast them): printed so that a test
    # can compare them across ranks and with a one-device run
    who = f"rank {rank}/{group_size}: " if group_size > 1 else ""
    print(f"{who}initial weights sha256 {_digest([p.asnumpy() for p in net.trainable_params()])}", flush=True)
    lr = warmup_cosine_annealing_lr(cfg.lr_init, steps_per_epoch, cfg.warmup_epochs, cfg.epoch_size,
                                    cfg.iteration_max, cfg.lr_min)
    opt = nn.Momentum(get_param_groups(net), learning_rate=Tensor(lr), momentum=cfg.momentum,
                      weight_decay=cfg.weight_decay, loss_scale=cfg.loss_scale)
    loss_fn = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction='mean')
    if cfg.is_dynamic_loss_scale:
        scale_manager = DynamicLossScaleManager(65536, 2, 2000)
    else:
        scale_manager = FixedLossScaleManager(cfg.loss_scale, drop_overflow_update=False)
    model = Model(net, loss_fn=loss_fn, optimizer=opt, metrics={'top_1_accuracy', 'top_5_accuracy'},
                  amp_level=amp_level, loss_scale_manager=scale_manager, keep_batchnorm_fp32=False)

    ckpt_dir = args.ckpt_path
    os.makedirs(ckpt_dir, exist_ok=True)
    prefix = args.train_model

    def meta():
        return {'train_model': args.train_model, 'image_size': args.image_size, 'num_classes': num_classes}

    ecb = EvalCallBack(model, eval_dataset, net, ckpt_dir, meta, save=primary, log=log)

    # resume ----------------------------------------------------------------------------------------------
    start_epoch = 0
    if args.resume:
        path = find_resume(ckpt_dir, prefix, log) if args.resume == 'auto' else args.resume
        if path is None:
            log(f"resume: no valid checkpoint in {ckpt_dir}, starting from scratch")
        else:
            params = load_ckpt(str(path))
            if meta_value(params, 'train_model') not in (None, args.train_model):
                raise CheckpointError(f"{path}: checkpoint is for {meta_value(params, 'train_model')}, "
                                      f"not {args.train_model}")
            load_into(net, params, path, f'{args.train_model} at image size {args.image_size}')
            load_into(opt, params, path, 'the optimiser')
            start_epoch = int(meta_value(params, 'epoch', 0))
            ecb.best = {'top_1_accuracy': float(meta_value(params, 'best_top1', 0.0)),
                        'top_5_accuracy': float(meta_value(params, 'best_top5', 0.0))}
            ecb.best_epoch = int(meta_value(params, 'best_epoch', 0))
            log(f"resume: loaded {path} (epoch {start_epoch}, step {int(opt.global_step.asnumpy().item())})")

    # training --------------------------------------------------------------------------------------------
    summary = EpochSummary(os.path.join(ckpt_dir, 'summary.csv'), resume=start_epoch > 0) if primary else None
    writer = None
    if args.tensorboard and primary:
        from mindspore import SummaryRecord
        writer = SummaryRecord(os.path.join(ckpt_dir, 'summary'), network=net)
    epochs_left = cfg.epoch_size - start_epoch
    progress = Progress(max(1, epochs_left * steps_per_epoch), cfg.batch_size, enabled=primary,
                        every=max(1, min(50, steps_per_epoch // 2)))
    sink_steps = steps_per_epoch if sink else 1
    meter = ThroughputMeter(cfg.batch_size, warmup_steps=sink_steps, world_size=group_size)
    monitor = StepMonitor(meter, progress, lambda i: float(lr[min(i, len(lr) - 1)]))
    log(f"============== Starting Training: {args.train_model} on {target} ({amp_level}), {n_params:,} params, "
        f"{len(train_samples)} train / {len(eval_samples)} eval images, {num_classes} classes, "
        f"batch {cfg.batch_size} x {group_size}, {steps_per_epoch} steps/epoch, epochs {start_epoch + 1}-"
        f"{cfg.epoch_size}, sink {sink} ==============")
    last_loss, last_res = float('nan'), None
    for epoch in range(start_epoch, cfg.epoch_size):
        t0 = time.time()
        dataset, size = train_dataset(epoch)
        if args.train_model == 'sppnet_mult':
            log(f"================ Epoch:{epoch + 1} (input {size}) ==================")
        monitor.begin_epoch(epoch + 1, size, epoch * steps_per_epoch)
        model.train(epoch + 1, dataset, callbacks=[monitor], dataset_sink_mode=sink,
                    sink_size=steps_per_epoch if sink else -1, initial_epoch=epoch)
        progress.end_epoch()
        train_time = time.time() - t0
        last_loss = monitor.epoch_loss
        log(f"epoch: {epoch + 1} step: {steps_per_epoch}, loss is {last_loss:.6f}")
        if group_size > 1:  # the loss above is rank 0's own batch; each rank reports its own
            print(f"rank {rank}/{group_size}: epoch {epoch + 1} mean loss {last_loss:.7f}", flush=True)
        log(f"epoch time: {train_time * 1000:.3f} ms, per step time: {train_time * 1000 / steps_per_epoch:.3f} ms")
        # the multi-size model is evaluated only after its 224 epochs, as the original
        due = (epoch + 1) % args.eval_interval == 0 or epoch + 1 == cfg.epoch_size
        evaluated = args.run_eval and size == sizes[0] and due
        res = ecb.run(epoch + 1) if evaluated else None
        last_res = res or last_res
        if primary:
            # the summary row first: every checkpoint a resume can pick then has its row
            summary.add(epoch + 1, train_loss=last_loss, eval_top1=res and res['top_1_accuracy'],
                        eval_top5=res and res['top_5_accuracy'], lr=float(lr[min((epoch + 1) * steps_per_epoch,
                                                                                  len(lr)) - 1]),
                        images_per_sec=steps_per_epoch * cfg.batch_size * group_size / max(train_time, 1e-9),
                        time_sec=train_time)
            save_ckpt(os.path.join(ckpt_dir, f'{prefix}-{epoch + 1}.ckpt'), _train_state(net, opt),
                      dict(meta(), epoch=epoch + 1, best_top1=ecb.best['top_1_accuracy'],
                           best_top5=ecb.best['top_5_accuracy'], best_epoch=ecb.best_epoch))
            for old in epoch_checkpoints(ckpt_dir, prefix)[:-args.keep_checkpoint_max]:
                os.remove(old)
            if writer is not None:
                writer.add_value('scalar', 'train_loss', Tensor(np.float32(last_loss)))
                if res:
                    writer.add_value('scalar', 'eval_top1', Tensor(np.float32(res['top_1_accuracy'])))
                writer.record(epoch + 1)
    log(ecb.end_message())
    if group_size > 1:
        print(f"rank {rank}/{group_size}: final weights sha256 "
              f"{_digest([p.asnumpy() for p in net.trainable_params()])}", flush=True)
    if writer is not None:
        writer.close()

    # record ----------------------------------------------------------------------------------------------
    if not primary:
        return 0
    if summary.rows:
        plot_curves(summary.path, os.path.join(ckpt_dir, 'curves.png'), title=f'{args.train_model} ({target})')
    accuracy = ecb.best['top_1_accuracy'] if ecb.best_epoch else float('nan')
    network_name = {'zfnet': 'ZFNet', 'sppnet_single': 'SPPNet_single', 'sppnet_mult': 'SPPNet_mult'}
    finish_run(output_dir=args.output_path or ckpt_dir, network=network_name[args.train_model],
               case=case_name(network_name[args.train_model], cfg.batch_size, group_size, args.performance),
               framework='mindspore', framework_version=ms.__version__, device=target.lower(),
               rank_size=group_size, batch_size=cfg.batch_size, params=n_params,
               epochs=cfg.epoch_size, meter=meter, accuracy=accuracy,
               loss=last_loss if math.isfinite(last_loss) else None, seed=cfg.seed,
               extra={'train_model': args.train_model, 'image_size': args.image_size, 'amp_level': amp_level,
                      'num_classes': num_classes, 'best_top1': ecb.best['top_1_accuracy'],
                      'best_top5': ecb.best['top_5_accuracy'], 'best_epoch': ecb.best_epoch,
                      'last_eval': last_res,
                      'compile_seconds': round(meter.warmup_seconds + monitor.compile_seconds, 3),
                      'steps_per_epoch': steps_per_epoch, 'start_epoch': start_epoch,
                      'best_ckpt': os.path.abspath(ecb.best_path) if ecb.best_epoch else None,
                      'dataset_sink_mode': sink, 'gradients_mean': args.gradients_mean})
    return 0


def _digest(arrays):
    import hashlib
    h = hashlib.sha256()
    for a in arrays:
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def _train_state(net, opt):
    """Weights plus the optimiser's momenta and step counter (which is also the LR schedule position)."""
    items = [{'name': p.name, 'data': p} for p in net.trainable_params()]
    items += [{'name': p.name, 'data': p} for p in opt.moments]
    items.append({'name': opt.global_step.name, 'data': opt.global_step})
    return items


def run(argv=None):
    """Entry point: known failures end with one 'ERROR: ...' line and exit status 2."""
    from common.checkpoint import CheckpointError
    from common.imagefolder import ImageFolderError
    try:
        return main(argv)
    except (ImageFolderError, CheckpointError, ValueError, FloatingPointError) as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        # errors raised in the data pipeline's reader come back wrapped by MindSpore; keep our one line
        text = str(exc)
        for line in text.splitlines():
            if 'ImageFolderError' in line or 'cannot decode' in line:
                print(f"ERROR: {line.split('ImageFolderError:')[-1].strip()}", file=sys.stderr)
                return 2
        raise


if __name__ == '__main__':
    sys.exit(run())
