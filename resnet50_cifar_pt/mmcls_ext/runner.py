"""``ZooEpochBasedRunner``: mmcv's ``EpochBasedRunner`` with the changes this recipe needs.

- ``train_one_epoch`` is the epoch of training (mmcv's workflow calls it by its name there, ``train``);
- checkpoints are written atomically, ``latest.pth`` is re-pointed in one rename, and each complete save is a
  ``checkpoint`` event (``common.events``) in the work dir;
- ``resume`` reads the checkpoint with ``weights_only=True``, refuses one written by a job of another rank
  count (``common.resume.check_world``; ``meta.world_size`` is saved with every checkpoint), and does not
  execute the config text stored in it (mmcv's ``resume`` rebuilds that config with ``Config.fromstring``, i.e. runs Python from the file);
- the training forward pass can run under an autocast context (``--amp``) and the AMP loss scaler's state
  travels with the checkpoint; both are constructor arguments;
- no fixed 2 s sleep at each train/val epoch start (mmcv's guard against a data-loader deadlock with
  non-persistent workers; the loaders here keep their workers).
"""
from __future__ import annotations

from pathlib import Path

import torch
from mmcv.runner import RUNNERS, EpochBasedRunner

from common import events
from common.resume import check_world

from .checkpoint import point_latest, save_checkpoint


@RUNNERS.register_module()
class ZooEpochBasedRunner(EpochBasedRunner):
    """``autocast``: a zero-argument callable returning the context the training forward runs in (None: none);
    ``grad_scaler``: the torch.amp.GradScaler of fp16 autocast, saved and restored with the checkpoints;
    ``timestamp``: names the log files (mmcv's ``<timestamp>.log.json`` beside the recipe's ``<timestamp>.log``).
    """

    def __init__(self, *args, autocast=None, grad_scaler=None, timestamp=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.autocast = autocast
        self.grad_scaler = grad_scaler
        if timestamp is not None:
            self.timestamp = timestamp

    def run_iter(self, data_batch, train_mode, **kwargs):
        if train_mode and self.autocast is not None:
            with self.autocast():
                return super().run_iter(data_batch, train_mode, **kwargs)
        return super().run_iter(data_batch, train_mode, **kwargs)

    def _loop(self, data_loader, phase, **kwargs):
        self.data_loader = data_loader
        self.call_hook(f"before_{phase}_epoch")
        for i, data_batch in enumerate(data_loader):
            self.data_batch = data_batch
            self._inner_iter = i
            self.call_hook(f"before_{phase}_iter")
            self.run_iter(data_batch, train_mode=phase == "train", **kwargs)
            self.call_hook(f"after_{phase}_iter")
            del self.data_batch
            if phase == "train":
                self._iter += 1
        self.call_hook(f"after_{phase}_epoch")

    def train_one_epoch(self, data_loader, **kwargs):
        """One epoch of training; the eval hook (``mmcls_ext.hooks.validate``) runs at its end."""
        self.model.train()
        self.mode = "train"
        self._max_iters = self._max_epochs * len(data_loader)
        self._loop(data_loader, "train", **kwargs)
        self._epoch += 1

    train = train_one_epoch  # the name mmcv's workflow [("train", 1)] calls

    def val(self, data_loader, **kwargs):
        self.model.eval()
        self.mode = "val"
        with torch.no_grad():
            self._loop(data_loader, "val", **kwargs)

    def save_checkpoint(self, out_dir, filename_tmpl="epoch_{}.pth", save_optimizer=True, meta=None,
                        create_symlink=True):
        meta = dict(meta or {})
        if self.meta is not None:
            meta.update(self.meta)
        meta.update(epoch=self.epoch + 1, iter=self.iter, world_size=self.world_size)
        if self.grad_scaler is not None:
            meta["grad_scaler"] = self.grad_scaler.state_dict()
        path = Path(out_dir) / filename_tmpl.format(self.epoch + 1)
        save_checkpoint(self.model, path, self.optimizer if save_optimizer else None, meta)
        if create_symlink:
            point_latest(path, Path(out_dir) / "latest.pth")
        events.emit(self.work_dir or out_dir, "checkpoint", rank=self.rank, path=str(Path(path).resolve()),
                    epoch=self.epoch + 1, global_step=self.iter)

    def resume(self, checkpoint, resume_optimizer=True, map_location="cpu"):
        ckpt = self.load_checkpoint(checkpoint, map_location="cpu")
        meta = ckpt["meta"]
        self._epoch, self._iter = int(meta["epoch"]), int(meta["iter"])
        # another rank count means another global batch and data shard per rank: refused (tools/train.py checks
        # before anything is written; this is the last line for any other caller)
        check_world(checkpoint, meta.get("world_size"), self.world_size)
        self.meta = {**(self.meta or {}), "hook_msgs": dict(meta.get("hook_msgs", {}))}
        if resume_optimizer and "optimizer" in ckpt:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.grad_scaler is not None and "grad_scaler" in meta:
            self.grad_scaler.load_state_dict(meta["grad_scaler"])
        self.logger.info("resumed from %s: epoch %d, iter %d", checkpoint, self.epoch, self.iter)
