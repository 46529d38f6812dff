"""Hooks registered by tools/train.py next to mmcv's own (lr, optimiser, checkpoint, logger, eval)."""
from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import torch
from mmcv.runner import HOOKS, CheckpointHook, Hook, OptimizerHook

from common import events
from common.progress import Progress
from common.summary import EpochSummary, plot_curves
from mmcls.core import DistEvalHook, EvalHook

from .parallel import param_digest


@HOOKS.register_module()
class EpochSeedHook(Hook):
    """Re-seed python, numpy and torch at every epoch start from (seed, epoch, rank).

    The epoch's shuffle order and augmentations then depend only on those three numbers, so a run
    resumed from ``epoch_N.pth`` draws exactly what the uninterrupted run drew (with
    ``workers_per_gpu=0``; persistent workers keep their own streams across epochs).
    """

    def __init__(self, seed: int, rank: int = 0):
        self.seed, self.rank = int(seed), int(rank)

    def before_train_epoch(self, runner):
        s = (self.seed + 1_000_003 * runner.epoch + 7919 * self.rank) % 2 ** 32
        random.seed(s)
        np.random.seed(s)
        torch.manual_seed(s)


@HOOKS.register_module()
class RankCheckpointHook(CheckpointHook):
    """mmcv's checkpoint hook on a rank R > 0, which mmcv's own skips (its save is ``master_only``): the same
    schedule, into the rank's own series (``filename_tmpl`` ``rankR_epoch_{}.pth``, its newest
    ``mmcls_ext.resume.KEEP`` kept, no ``latest.pth``). The file holds this rank's BatchNorm running statistics,
    which a resumed rank must get back (see mmcls_ext/resume.py)."""

    def _save_checkpoint(self, runner):
        CheckpointHook._save_checkpoint.__wrapped__(self, runner)  # the undecorated save and pruning


@HOOKS.register_module()
class AmpOptimizerHook(OptimizerHook):
    """Optimiser step with torch's native GradScaler (fp16 autocast on GPU/NPU without apex)."""

    def __init__(self, scaler, grad_clip=None):
        super().__init__(grad_clip=grad_clip)
        self.scaler = scaler

    def after_train_iter(self, runner):
        runner.optimizer.zero_grad()
        self.scaler.scale(runner.outputs["loss"]).backward()
        if self.grad_clip is not None:
            self.scaler.unscale_(runner.optimizer)
            self.clip_grads(runner.model.parameters())
        self.scaler.step(runner.optimizer)
        self.scaler.update()


@HOOKS.register_module()
class ApexOptimizerHook(OptimizerHook):
    """Optimiser step through apex.amp's loss scaling (the Ascend original: O2, static scale 1024)."""

    def after_train_iter(self, runner):
        from apex import amp
        runner.optimizer.zero_grad()
        with amp.scale_loss(runner.outputs["loss"], runner.optimizer) as scaled:
            scaled.backward()
        if self.grad_clip is not None:
            self.clip_grads(amp.master_params(runner.optimizer))
        runner.optimizer.step()


class RankZeroEvalHook(EvalHook):
    """Evaluation on rank 0 alone, on the unwrapped model.

    mmcls' DistEvalHook gathers results through CUDA tensors, so CPU (gloo) jobs evaluate here instead;
    the other ranks simply wait at the next gradient all-reduce.
    """

    def _do_evaluate(self, runner):
        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        results = self.test_fn(model, self.dataloader)
        self.latest_results = results
        runner.log_buffer.output["eval_iter_num"] = len(self.dataloader)
        self.evaluate(runner, results)


def validate(val_loader, eval_cfg: dict, distributed: bool, device: str) -> Hook:
    """The validation after each training epoch, as the eval hook the runner calls at the epoch's end.

    One process: mmcls' EvalHook; several: its DistEvalHook (every rank evaluates a shard), except on CPU
    where its result gathering needs CUDA and rank 0 evaluates the whole set (``RankZeroEvalHook``).
    """
    eval_cfg = dict(eval_cfg, by_epoch=True)
    if distributed and device == "cpu":
        return RankZeroEvalHook(val_loader, **eval_cfg)
    return (DistEvalHook if distributed else EvalHook)(val_loader, **eval_cfg)


class ThroughputHook(Hook):
    """Times every training iteration (data loading included, as mmcv's ``time:``) into a ThroughputMeter."""

    def __init__(self, meter):
        self.meter = meter
        self.epoch_images = 0
        self.epoch_seconds = 0.0
        self.min_step_seconds = None
        self._t = None

    def before_train_epoch(self, runner):
        self.epoch_images, self.epoch_seconds = 0, 0.0
        self._t = time.perf_counter()

    def after_train_iter(self, runner):
        now = time.perf_counter()
        images = int(runner.outputs.get("num_samples", self.meter.batch_size))
        self.meter.record(now - self._t, images=images)
        if self.min_step_seconds is None or now - self._t < self.min_step_seconds:
            self.min_step_seconds = now - self._t
        self.epoch_images += images
        self.epoch_seconds += now - self._t
        self._t = now

    @property
    def last_step_end(self):
        return self._t

    @property
    def epoch_rate(self):
        return self.epoch_images * self.meter.world_size / self.epoch_seconds if self.epoch_seconds else 0.0


class SummaryHook(Hook):
    """Per-epoch row of summary.csv and curves.png; keeps the best top-1 and the last epoch's mean loss.

    Register it after the evaluation hook at the same priority so the epoch's accuracy is in the log
    buffer and the logger hooks have not cleared it yet.
    """

    def __init__(self, work_dir, throughput: ThroughputHook, resume: bool, write: bool):
        self.csv = Path(work_dir) / "summary.csv"
        self.png = Path(work_dir) / "curves.png"
        self.summary = EpochSummary(self.csv, resume=resume) if write else None
        self.throughput = throughput
        self.best_top1 = None
        self.last_loss = None
        self.eval_seconds = 0.0
        self._loss_sum, self._loss_n, self._t0 = 0.0, 0, None
        if self.summary is not None:
            for row in self.summary.rows:
                if row.get("eval_top1") not in ("", None):
                    self._best(float(row["eval_top1"]))

    def _best(self, top1):
        self.best_top1 = top1 if self.best_top1 is None else max(self.best_top1, top1)

    def before_train_epoch(self, runner):
        self._loss_sum, self._loss_n, self._t0 = 0.0, 0, time.perf_counter()

    def after_train_iter(self, runner):
        self._loss_sum += float(runner.outputs["log_vars"]["loss"])
        self._loss_n += 1

    def after_train_epoch(self, runner):
        # the evaluation hook ran between the epoch's last step and here
        self.eval_seconds += time.perf_counter() - self.throughput.last_step_end
        out = runner.log_buffer.output
        top1 = out.get("accuracy_top-1")
        top5 = out.get("accuracy_top-5")
        # mmcls reports percentages; the run record and the curves use fractions
        top1 = None if top1 is None else float(top1) / 100.0
        top5 = None if top5 is None else float(top5) / 100.0
        if top1 is not None:
            self._best(top1)
        self.last_loss = self._loss_sum / max(self._loss_n, 1)
        if self.summary is None:
            return
        lr = runner.current_lr()
        lr = lr[0] if isinstance(lr, list) else next(iter(lr.values()))[0]
        self.summary.add(runner.epoch + 1, train_loss=self.last_loss, eval_top1=top1, eval_top5=top5,
                         lr=float(lr), images_per_sec=self.throughput.epoch_rate,
                         time_sec=time.perf_counter() - self._t0)
        plot_curves(self.csv, self.png, title="resnet50_cifar_pt")


class ProgressHook(Hook):
    """common.progress: a live line on a terminal, a plain line every ``every`` steps otherwise."""

    def __init__(self, batch_size, every=50, enabled=True):
        self.batch_size, self.every, self.enabled = batch_size, every, enabled
        self.progress = None

    def before_run(self, runner):
        self.progress = Progress(runner.max_iters - runner.iter, self.batch_size, every=self.every,
                                 enabled=self.enabled)

    def after_train_iter(self, runner):
        lr = runner.current_lr()
        lr = lr[0] if isinstance(lr, list) else next(iter(lr.values()))[0]
        self.progress.update(runner.epoch + 1, runner.inner_iter + 1, float(runner.outputs["log_vars"]["loss"]), lr)

    def after_train_epoch(self, runner):
        self.progress.end_epoch()


class EventsHook(Hook):
    """``common.events`` of the training loop: ``initial_weights`` before the first step and ``step`` at the
    logger's interval (mmcv's ``Epoch [e][s/n]`` line), into ``out_dir``. Register it on one rank only.

    ``initial_digest`` is kept for the run record. ``resume`` comes from tools/train.py, ``checkpoint`` from
    the runner's save.
    """

    def __init__(self, out_dir, interval: int = 1, rank: int = 0):
        self.out_dir, self.interval, self.rank = Path(out_dir), max(1, int(interval)), int(rank)
        self.initial_digest = None

    def before_run(self, runner):
        self.initial_digest = param_digest(runner.model)
        events.emit(self.out_dir, "initial_weights", rank=self.rank, digest=self.initial_digest)

    def after_train_iter(self, runner):
        if self.every_n_inner_iters(runner, self.interval):
            # the runner counts this step into runner.iter only after its after_train_iter hooks
            events.emit(self.out_dir, "step", rank=self.rank, epoch=runner.epoch + 1, step=runner.inner_iter + 1,
                        global_step=runner.iter + 1, loss=float(runner.outputs["log_vars"]["loss"]))
