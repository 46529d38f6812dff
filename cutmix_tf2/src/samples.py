"""PNG grid of CutMix'ed training samples titled with their mixed labels (as the keras-io example shows)."""
from __future__ import annotations

import numpy as np

from common.checkpoint import atomic_write


def label_text(label, names, top=2):
    order = np.argsort(-label)[:top]
    return "\n".join(f"{names[i]}: {label[i]:.2f}" for i in order if label[i] > 0)


def save_grid(images, labels, names, png_path, cols=4, title="CutMix training samples"):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(len(images), cols * cols)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.5 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(np.clip(images[i], 0.0, 1.0))
            ax.set_title(label_text(labels[i], names), fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(png_path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return png_path
