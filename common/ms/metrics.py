"""Evaluation metrics shared by the MindSpore recipes' eval.py: the originals' top-1/top-5, and the logits of
every image for ``--logits_file``."""
import numpy as np
from mindspore.train import Metric, Top1CategoricalAccuracy, Top5CategoricalAccuracy


class LogitsCollector(Metric):
    """Keeps every evaluated image's logits and label in the pipeline's order (``eval.py --logits_file``): the
    numbers behind top-1/top-5, so a checkpoint's outputs can be compared with another network's, image by image.
    """

    def __init__(self):
        super().__init__()
        self.clear()

    def clear(self):
        self.logits, self.labels = [], []

    def update(self, *inputs):
        self.logits.append(self._convert_data(inputs[0]).astype(np.float32))
        self.labels.append(self._convert_data(inputs[1]).astype(np.int64))

    def eval(self):
        return len(self.logits)

    def save(self, path, files):
        """``path`` (.npz): ``logits`` [N, classes], ``labels`` [N], ``files`` [N] (the image paths, same order)."""
        logits = np.concatenate(self.logits) if self.logits else np.zeros((0, 0), np.float32)
        labels = np.concatenate(self.labels) if self.labels else np.zeros((0,), np.int64)
        with open(path, "wb") as f:  # np.savez would append .npz to a name without it
            np.savez(f, logits=logits, labels=labels, files=np.array([str(x) for x in files]))


def eval_metrics(logits=None):
    """The original eval.py's top-1/top-5 metrics, plus ``logits`` (a LogitsCollector) when given."""
    metrics = {"top_1_accuracy": Top1CategoricalAccuracy(), "top_5_accuracy": Top5CategoricalAccuracy()}
    if logits is not None:
        metrics["logits"] = logits
    return metrics
