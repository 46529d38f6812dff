"""Rank 0's record of every epoch: summary.csv, curves.png and, with --tensorboard, MindSpore summary files."""
from pathlib import Path

import mindspore as ms

from common.summary import EpochSummary, plot_curves


class EpochLog:
    def __init__(self, directory, title, label, resume=False, tensorboard=False):
        self.directory = Path(directory)
        self.title, self.label = title, label
        self.summary = EpochSummary(self.directory / "summary.csv", resume=resume)
        self.writer = None
        if tensorboard:
            from mindspore.train.summary import SummaryRecord
            (self.directory / "tensorboard").mkdir(parents=True, exist_ok=True)
            self.writer = SummaryRecord(str(self.directory / "tensorboard"))

    def add(self, epoch, loss, top1, top5, lr, images_per_sec, seconds):
        self.summary.add(epoch, train_loss=loss, eval_top1=top1, eval_top5=top5, lr=lr,
                         images_per_sec=images_per_sec, time_sec=seconds)
        plot_curves(self.summary.path, self.directory / "curves.png", title=self.title, labels=[self.label])
        if self.writer is not None:
            for name, value in (("loss", loss), ("lr", lr), ("top1", top1), ("top5", top5)):
                if value is not None:
                    self.writer.add_value("scalar", name, ms.Tensor(float(value), ms.float32))
            self.writer.record(epoch)
            self.writer.flush()

    def close(self):
        if self.writer is not None:
            self.writer.close()
