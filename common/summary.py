"""Per-epoch CSV summary and a PNG of the training curves, written next to the checkpoints."""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path

from .checkpoint import atomic_write

FIELDS = ["epoch", "train_loss", "eval_top1", "eval_top5", "lr", "images_per_sec", "time_sec"]


class EpochSummary:
    """Appends one row per epoch to ``summary.csv``; ``resume=True`` keeps rows of earlier epochs."""

    def __init__(self, path, resume: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows = []
        if resume and self.path.is_file():
            with open(self.path) as fh:
                self.rows = list(csv.DictReader(fh))

    def add(self, epoch, train_loss=None, eval_top1=None, eval_top5=None, lr=None, images_per_sec=None, time_sec=None):
        row = {"epoch": int(epoch), "train_loss": train_loss, "eval_top1": eval_top1, "eval_top5": eval_top5,
               "lr": lr, "images_per_sec": images_per_sec, "time_sec": time_sec}
        row = {k: ("" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)) for k, v in row.items()}
        # keep one row per epoch: a resumed run overwrites the epochs it repeats
        self.rows = [r for r in self.rows if int(r["epoch"]) != row["epoch"]] + [row]
        self.rows.sort(key=lambda r: int(r["epoch"]))

        def _w(tmp):
            with open(tmp, "w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=FIELDS)
                w.writeheader()
                w.writerows(self.rows)
        atomic_write(self.path, _w)


def read_summary(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def _col(rows, key):
    xs, ys = [], []
    for r in rows:
        v = r.get(key, "")
        if v not in ("", None):
            try:
                f = float(v)
            except ValueError:
                continue
            if math.isfinite(f):
                xs.append(int(float(r["epoch"])))
                ys.append(f)
    return xs, ys


def plot_curves(csv_paths, png_path, title="training curves", labels=None, size=(10, 4), dpi=100):
    """Loss and accuracy against epoch, one line per CSV (several CSVs compare runs). Returns the PNG path."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if isinstance(csv_paths, (str, Path)):
        csv_paths = [csv_paths]
    labels = labels or [Path(p).parent.name or str(p) for p in csv_paths]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=size, dpi=dpi)
    for path, label in zip(csv_paths, labels):
        rows = read_summary(path)
        ax_loss.plot(*_col(rows, "train_loss"), marker="o", label=label)
        ax_acc.plot(*_col(rows, "eval_top1"), marker="o", label=label)
    ax_loss.set(xlabel="epoch", ylabel="train loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="eval top-1", title="accuracy", ylim=(0, 1))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(png_path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return Path(png_path)
