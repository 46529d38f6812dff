"""What train.py's steps share: the run context, the LR schedule, resume, and the state of the epoch loop."""
import math
import os
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import mindspore as ms

from common.checkpoint import CheckpointError
from common.ms import CheckpointSeries, RankLog, StepMonitor, cell_digest, load_ckpt, load_into, meta_value
from common.ms.checkpoint import check_resume_classes, classes_meta
from common.ms.resume import saved_world
from common.resume import check_world
from common.progress import Progress
from common.summary import EpochSummary, plot_curves
from common.throughput import ThroughputMeter, warmup_steps

from .eval_callback import EvalCallBack
from .generator_lr import warmup_cosine_annealing_lr
from .sppnet import count_params
from .utils import default_amp_level, resolve_device_target

NETWORK_NAMES = {'zfnet': 'ZFNet', 'sppnet_single': 'SPPNet_single', 'sppnet_mult': 'SPPNet_mult'}


# -- run context -----------------------------------------------------------------------------------------------
@dataclass
class RunContext(RankLog):
    """Where and as what this process runs. ``out_dir`` holds events.jsonl: --output_path, else --ckpt_path
    (where finish_run writes too)."""
    target: str
    amp_level: str
    sink: bool
    out_dir: Optional[str]
    rank: int = 0
    group_size: int = 1


def init_device(args):
    """Graph mode on the resolved device; with ``--is_distributed=1`` the data-parallel group."""
    from mindspore.communication import get_group_size, get_rank, init
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
    amp_level = default_amp_level(target) if args.amp_level == 'auto' else args.amp_level
    sink = effective_sink(target, args.dataset_sink_mode, log=print if rank == 0 else None)
    # events beside the run records (finish_run's folder), so one run has one events.jsonl
    return RunContext(target, amp_level, sink, args.output_path or args.ckpt_path, rank, group_size)


def effective_sink(target, requested, log=None):
    """Whether training really sinks the dataset: the default is the original's (on, except on CPU).

    MindSpore 2.10's ``Model.train`` runs a CPU job without sink whatever it is asked (model.py: "The CPU cannot
    support dataset sink mode currently"), calling the callbacks once per step: a run that believed it sank would
    round its warm-up up to whole "sinks" that never happen, and would split its epochs into sinks that the
    fallback runs as whole passes. So on CPU the flag is honoured as what MindSpore does: off, said in one line."""
    if requested is None:
        return target != 'CPU'
    if requested and target == 'CPU':
        if log is not None:
            log("dataset sink mode: MindSpore's CPU backend trains without sink (Model.train falls back to "
                "per-step feeding), so this run does too")
        return False
    return bool(requested)


def sink_plan(steps_per_epoch, epochs_to_run, sink):
    """(sinks per epoch, steps per sink) of ``Model.train``.

    Without sink, or with more than one epoch to run: one sink per epoch (the original's ``sink_size`` = the
    epoch), and the throughput warm-up is the whole first epoch, which holds the graph compilation. A run of one
    epoch (the performance script's) with sink has no second epoch to time: one sink would make its only callback
    hold both compilation and every step, so the epoch is split into sinks of its largest proper divisor (at least
    two sinks, all of equal size, the data of one pass); the first sink, with the compilation, is the warm-up
    (``common.throughput.warmup_steps`` rounds up to whole sinks) and the others are timed."""
    if not sink or epochs_to_run > 1 or steps_per_epoch < 2:
        return 1, steps_per_epoch
    smallest_factor = next(f for f in range(2, steps_per_epoch + 1) if steps_per_epoch % f == 0)
    return smallest_factor, steps_per_epoch // smallest_factor


class SinkStepMonitor(StepMonitor):
    """StepMonitor for epochs made of several sinks (``sink_plan``): MindSpore numbers every sink as an epoch, so
    its epoch-begin hook must not start a new epoch (which would drop the losses of the earlier sinks); the recipe
    starts each epoch with ``begin_epoch`` before its ``Model.train`` call. Only the step clock is restarted."""

    def on_train_epoch_begin(self, run_context):
        self._t0 = time.perf_counter()


def learning_rates(cfg, steps_per_epoch):
    """The per-step LR of the whole run (the original's warm-up + per-epoch cosine)."""
    return warmup_cosine_annealing_lr(cfg.lr_init, steps_per_epoch, cfg.warmup_epochs, cfg.epoch_size,
                                      cfg.iteration_max, cfg.lr_min)


# -- checkpoints and resume ------------------------------------------------------------------------------------
@dataclass
class TrainState:
    """Where training (re)starts: epochs done, optimiser steps done, the best evaluation so far."""
    epoch: int = 0
    global_step: int = 0
    best: dict = field(default_factory=lambda: {'top_1_accuracy': 0.0, 'top_5_accuracy': 0.0})
    best_epoch: int = 0


def checkpoint_series(args, ctx, rank=0):
    """``<ckpt_path>/<model>-<epoch>.ckpt``, the newest ``--keep_checkpoint_max`` kept: rank 0's, which
    ``--resume`` reads on every rank. ``rank`` r > 0: that rank's own copy in ``<ckpt_path>/rank_<r>/``
    (``--rank_checkpoints``), so the replicas' weights can be compared file by file. Every file records the job's
    rank count (``common.ms.resume``: another rank count is refused)."""
    folder = args.ckpt_path if rank == 0 else os.path.join(args.ckpt_path, f'rank_{rank}')
    return CheckpointSeries(folder, f'{args.train_model}-{{epoch}}.ckpt', keep=args.keep_checkpoint_max,
                            events_dir=ctx.out_dir, rank=ctx.rank, log=ctx.log, world=ctx.group_size)


def train_state_items(net, opt):
    """Weights plus the optimiser's momenta and step counter (which is also the LR schedule position)."""
    items = [{'name': p.name, 'data': p} for p in net.trainable_params()]
    items += [{'name': p.name, 'data': p} for p in opt.moments]
    items.append({'name': opt.global_step.name, 'data': opt.global_step})
    return items


def restore(args, net, opt, path, world=1, params=None, classes=None):
    """Load a training checkpoint into ``net`` and ``opt``; returns its TrainState. ``params``: the file already
    loaded (``--resume auto`` read it to agree on it). A checkpoint of a job with another rank count than
    ``world``, or trained on other class names than ``classes`` (the run's), is refused with one line."""
    params = load_ckpt(str(path)) if params is None else params
    check_world(path, saved_world(params), world)
    if classes is not None:
        check_resume_classes(params, path, classes)
    trained = meta_value(params, 'train_model')
    if trained not in (None, args.train_model):
        raise CheckpointError(f"{path}: checkpoint is for {trained}, not {args.train_model}")
    load_into(net, params, path, f'{args.train_model} at image size {args.image_size}')
    load_into(opt, params, path, 'the optimiser')
    best = {'top_1_accuracy': float(meta_value(params, 'best_top1', 0.0)),
            'top_5_accuracy': float(meta_value(params, 'best_top5', 0.0))}
    return TrainState(int(meta_value(params, 'epoch', 0)), int(opt.global_step.asnumpy().item()), best,
                      int(meta_value(params, 'best_epoch', 0)))


# -- per-epoch records -----------------------------------------------------------------------------------------
class EpochRecords:
    """``summary.csv`` (and, with ``--tensorboard``, MindSpore summary files) of rank 0, one row per epoch."""

    def __init__(self, args, ctx, net, lr, steps_per_epoch, resumed):
        self.dir, self.lr, self.steps = args.ckpt_path, lr, steps_per_epoch
        self.images_per_step = args.cfg.batch_size * ctx.group_size
        self.summary = EpochSummary(os.path.join(self.dir, 'summary.csv'), resume=resumed) if ctx.primary else None
        self.writer = None
        if args.tensorboard and ctx.primary:
            self.writer = ms.SummaryRecord(os.path.join(self.dir, 'summary'), network=net)

    def add(self, epoch, loss, res, seconds):
        top1, top5 = (res['top_1_accuracy'], res['top_5_accuracy']) if res else (None, None)
        lr = float(self.lr[min(epoch * self.steps, len(self.lr)) - 1])
        self.summary.add(epoch, train_loss=loss, eval_top1=top1, eval_top5=top5, lr=lr,
                         images_per_sec=self.steps * self.images_per_step / max(seconds, 1e-9), time_sec=seconds)
        if self.writer is not None:
            self.writer.add_value('scalar', 'train_loss', ms.Tensor(np.float32(loss)))
            if res:
                self.writer.add_value('scalar', 'eval_top1', ms.Tensor(np.float32(top1)))
            self.writer.record(epoch)

    def plot(self, title):
        if self.summary is not None and self.summary.rows:
            plot_curves(self.summary.path, os.path.join(self.dir, 'curves.png'), title=title)

    def close(self):
        if self.writer is not None:
            self.writer.close()


# -- the epoch loop's state ------------------------------------------------------------------------------------
@dataclass
class Loop:
    """What train(), train_one_epoch(), validate() and save_checkpoint() share, and what summarize() reports."""
    net: object
    opt: object
    trainer: object  # mindspore.train.Model
    monitor: StepMonitor
    meter: ThroughputMeter
    progress: Progress
    evaluator: EvalCallBack
    series: Optional[CheckpointSeries]  # None: a rank > 0 without --rank_checkpoints writes none
    records: EpochRecords
    steps_per_epoch: int
    start_epoch: int
    params: int
    image_size: int
    sinks_per_epoch: int = 1  # sink mode: Model.train sinks per epoch, of sink_size steps (sink_plan)
    sink_size: int = 0
    last_eval: Optional[dict] = None

    @classmethod
    def create(cls, args, ctx, net, data, trainer, opt, state):
        spe, cfg = data.steps_per_epoch, args.cfg
        lr = learning_rates(cfg, spe)
        epochs_left = cfg.epoch_size - state.epoch
        progress = Progress(max(1, epochs_left * spe), cfg.batch_size, enabled=ctx.primary,
                            every=max(1, min(50, spe // 2)))
        # in sink mode one callback covers a whole sink: the warm-up is rounded up to whole sinks, and a one-epoch
        # run is split into several sinks so that some are timed after the compiling one (sink_plan)
        sinks, sink_size = sink_plan(spe, max(1, epochs_left), ctx.sink)
        meter = ThroughputMeter(cfg.batch_size, world_size=ctx.group_size,
                                warmup_steps=warmup_steps(spe, max(1, epochs_left), group=sink_size if ctx.sink else 1))
        monitor_cls = SinkStepMonitor if sinks > 1 else StepMonitor
        monitor = monitor_cls(meter, progress, lambda i: float(lr[min(i, len(lr) - 1)]), events_dir=ctx.out_dir,
                              rank=ctx.rank)
        evaluator = EvalCallBack(trainer, data.eval, net, args.ckpt_path, lambda: _meta(args, net, data.classes),
                                 save=ctx.primary, log=ctx.log)
        evaluator.best, evaluator.best_epoch = dict(state.best), state.best_epoch
        records = EpochRecords(args, ctx, net, lr, spe, resumed=state.epoch > 0)
        series = checkpoint_series(args, ctx, ctx.rank) if ctx.primary or args.rank_checkpoints else None
        return cls(net, opt, trainer, monitor, meter, progress, evaluator, series, records,
                   spe, state.epoch, count_params(net), args.image_size, sinks_per_epoch=sinks, sink_size=sink_size)

    def start_message(self, args, ctx, data, state):
        return (f"============== Starting Training: {args.train_model} on {ctx.target} ({ctx.amp_level}), "
                f"{self.params:,} params, {len(data.train_samples)} train / {len(data.eval_samples)} eval images, "
                f"{_num_classes(self.net)} classes, batch {args.cfg.batch_size} x {ctx.group_size}, "
                f"{self.steps_per_epoch} steps/epoch, epochs {state.epoch + 1}-{args.cfg.epoch_size}, "
                f"sink {ctx.sink} ==============")

    def train_state(self):
        return train_state_items(self.net, self.opt)

    def checkpoint_meta(self, epoch):
        best = self.evaluator.best
        return dict(self.evaluator.meta_fn(), epoch=epoch, best_top1=best['top_1_accuracy'],
                    best_top5=best['top_5_accuracy'], best_epoch=self.evaluator.best_epoch)

    def finish(self, ctx):
        ctx.log(self.evaluator.end_message())
        if ctx.group_size > 1:
            print(f"rank {ctx.rank}/{ctx.group_size}: final weights sha256 {cell_digest(self.net)}", flush=True)
        self.records.close()

    @property
    def accuracy(self):
        return self.evaluator.best['top_1_accuracy'] if self.evaluator.best_epoch else float('nan')

    @property
    def final_loss(self):
        loss = self.monitor.epoch_loss
        return loss if math.isfinite(loss) else None

    def record_extra(self, args, ctx):
        ev = self.evaluator
        return {'train_model': args.train_model, 'image_size': args.image_size, 'amp_level': ctx.amp_level,
                'num_classes': _num_classes(self.net), 'best_top1': ev.best['top_1_accuracy'],
                'best_top5': ev.best['top_5_accuracy'], 'best_epoch': ev.best_epoch, 'last_eval': self.last_eval,
                'compile_seconds': round(self.meter.warmup_seconds + self.monitor.compile_seconds, 3),
                'steps_per_epoch': self.steps_per_epoch, 'start_epoch': self.start_epoch,
                'best_ckpt': os.path.abspath(ev.best_path) if ev.best_epoch else None,
                'dataset_sink_mode': ctx.sink, 'sink_size': self.sink_size if ctx.sink else None,
                'sinks_per_epoch': self.sinks_per_epoch if ctx.sink else None,
                'gradients_mean': args.gradients_mean}


def _num_classes(net):
    return int(net.fc3.weight.shape[0])


def _meta(args, net, classes):
    """What every checkpoint of the run records about the network (eval.py and export.py read it back), with
    training's class names (label = index), by which eval.py labels its folders."""
    return {'train_model': args.train_model, 'image_size': args.image_size, 'num_classes': _num_classes(net),
            **classes_meta(classes)}
