"""Evaluation during training and the ``best.ckpt`` rule of the original ``src/eval_callback.py``.

After an evaluated epoch the best checkpoint is replaced when top-1 >= best top-1 **and** top-5 >= best top-5
(both, as the original), printing the same lines. The file is written atomically.
"""
import os
import time

from common.ms import save_ckpt
from common.ms.metrics import LogitsCollector, eval_metrics  # noqa: F401  (eval.py takes them from here)

METRICS = {'top_1_accuracy', 'top_5_accuracy'}


def evaluate(model, dataset, sink=False):
    res = model.eval(dataset, dataset_sink_mode=sink)
    return {'top_1_accuracy': float(res['top_1_accuracy']), 'top_5_accuracy': float(res['top_5_accuracy'])}


class EvalCallBack:
    """Evaluate after a training epoch (``train.py`` calls ``run(epoch)``); keep ``<ckpt_dir>/best.ckpt``.

    ``dataset_fn()`` builds the evaluation pipeline (a fresh one each time); ``network`` is what best.ckpt
    holds. ``meta_fn()`` adds metadata (model name, image size) to it. Only ``save`` ranks write files.
    """

    def __init__(self, model, dataset_fn, network, ckpt_dir, meta_fn=None, save=True, log=print):
        self.model, self.dataset_fn, self.network = model, dataset_fn, network
        self.ckpt_dir, self.meta_fn, self.save, self.log = ckpt_dir, meta_fn, save, log
        self.best = {'top_1_accuracy': 0.0, 'top_5_accuracy': 0.0}
        self.best_epoch = 0
        self.last = None
        self.best_path = os.path.join(ckpt_dir, 'best.ckpt')

    def run(self, epoch):
        t0 = time.time()
        res = evaluate(self.model, self.dataset_fn())
        self.last = res
        self.log(f"epoch: {epoch}, {METRICS}: {res}, eval_cost:{time.time() - t0:.2f}")
        if res['top_1_accuracy'] >= self.best['top_1_accuracy'] and \
                res['top_5_accuracy'] >= self.best['top_5_accuracy']:
            self.best, self.best_epoch = dict(res), epoch
            self.log(f"update best result: {res}")
            if self.save:
                meta = dict(self.meta_fn() if self.meta_fn else {}, best_epoch=epoch,
                            top_1_accuracy=res['top_1_accuracy'], top_5_accuracy=res['top_5_accuracy'])
                save_ckpt(self.best_path, self.network, meta)
                self.log(f"update best checkpoint at: {self.best_path}")
        return res

    def end_message(self):
        return (f"End training, the best {METRICS} is: {self.best}, "
                f"the best {METRICS} epoch is {self.best_epoch}")
