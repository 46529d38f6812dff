"""Dataset sink mode (the default on Ascend/GPU): a one-epoch performance run's images/sec leaves compilation out.

In sink mode MindSpore runs a whole sink on the device and calls ``on_train_step_end`` once per sink. With the
original's one sink per epoch, the performance run's single epoch was a single callback holding the graph
compilation and every step, so its images/sec had no steady step (issue #20). ``src.training.sink_plan`` splits a
one-epoch sink run into equal sinks; the first (compiling) sink is the warm-up.

MindSpore 2.10's CPU backend cannot sink (``Model.train`` falls back to per-step feeding, model.py), so the real sink
path runs only on Ascend/GPU, which this machine lacks. It is tested here by a stand-in for ``Model.train`` that
calls the callbacks as MindSpore 2.10's ``_train_dataset_sink_process`` does (one epoch-begin and one step-end per
sink, ``cur_epoch_num`` counting sinks from ``initial_epoch``, ``cur_step_num`` advancing by the sink size), driven
through the recipe's own ``train_one_epoch`` and ``summarize``; and on CPU, a performance run asked to sink records
what MindSpore really does (no sink) and its steady steps.
"""
import json
import time
from types import SimpleNamespace

import numpy as np
import pytest

from common.throughput import warmup_steps

from conftest import RECIPE, run


def test_sink_plan_splits_only_a_one_epoch_sink_run():
    from src.training import sink_plan
    assert sink_plan(20, 1, True) == (2, 10)
    assert sink_plan(5004, 1, True) == (2, 2502)     # the original's ZFNet epoch at batch 256
    assert sink_plan(21, 1, True) == (3, 7)
    assert sink_plan(7, 1, True) == (7, 1)           # a prime: sinks of one step
    assert sink_plan(20, 2, True) == (1, 20)         # several epochs: the first one is the warm-up
    assert sink_plan(20, 1, False) == (1, 20)
    assert sink_plan(1, 1, True) == (1, 1)
    for spe in range(2, 300):
        n, k = sink_plan(spe, 1, True)
        # equal sinks covering one pass exactly, and a warm-up (rounded up to whole sinks) shorter than the epoch
        assert n >= 2 and n * k == spe and warmup_steps(spe, 1, group=k) < spe, spe


def test_sink_on_cpu_is_what_mindspore_does():
    from src.training import effective_sink
    said = []
    assert effective_sink('CPU', True, log=said.append) is False and 'CPU' in said[0]
    assert effective_sink('CPU', None) is False
    assert effective_sink('GPU', None) is True and effective_sink('Ascend', None) is True
    assert effective_sink('GPU', False) is False and effective_sink('Ascend', True) is True


class SinkingModel:
    """Stands in for ``mindspore.train.Model`` on a device in sink mode; calls the callbacks in the order and with
    the counters of MindSpore 2.10's ``Model._train_dataset_sink_process``. The first sink also compiles."""

    def __init__(self, compile_seconds, step_seconds):
        self.compile_seconds, self.step_seconds = compile_seconds, step_seconds
        self.steps_run, self.sinks, self.calls = 0, 0, []

    def train(self, epoch, dataset, callbacks=None, dataset_sink_mode=False, sink_size=-1, initial_epoch=0):
        assert dataset_sink_mode and sink_size > 0
        self.calls.append((epoch, sink_size, initial_epoch))
        cb = SimpleNamespace(cur_step_num=0, cur_epoch_num=initial_epoch, net_outputs=None, batch_num=sink_size)
        ctx = SimpleNamespace(original_args=lambda: cb)
        for c in callbacks:
            c.on_train_begin(ctx)
        for i in range(epoch - initial_epoch):
            cb.cur_epoch_num = initial_epoch + i + 1
            for c in callbacks:
                c.on_train_epoch_begin(ctx)
            cb.cur_step_num += sink_size
            for c in callbacks:
                c.on_train_step_begin(ctx)
            time.sleep((self.compile_seconds if self.sinks == 0 else 0.0) + self.step_seconds * sink_size)
            self.sinks += 1
            self.steps_run += sink_size
            cb.net_outputs = np.float32(3.0 - 0.5 * self.sinks)  # the sink's last step's loss
            for c in callbacks:
                c.on_train_step_end(ctx)
                c.on_train_epoch_end(ctx)
        for c in callbacks:
            c.on_train_end(ctx)


def test_a_one_epoch_sink_run_times_steady_sinks_after_the_compiling_one(tmp_path, capsys):
    """The performance run's shape (1 epoch of 20 steps) in sink mode on a device: two sinks of 10 through
    train_one_epoch and summarize; the JSON record has 10 warm-up steps (the compiling sink) and 10 steady ones,
    and the steady seconds per step exclude the compilation. The epoch keeps both sinks' losses and prints the
    last one as the original's LossMonitor line, under epoch 1 (MindSpore numbered the sinks 1 and 2)."""
    import train
    from src.sppnet import SppNet
    from src.training import Loop, RunContext, TrainState
    args = train.parse_args(['--train_model=zfnet', '--epoch_size=1', '--batch_size=4', '--image_size=56',
                             f'--ckpt_path={tmp_path}', '--perf', '--run_eval=false', '--dataset_sink_mode=true',
                             '--device_target=GPU'])
    ctx = RunContext('GPU', 'O2', True, str(tmp_path), 0, 1)
    net = SppNet(10, 'train', True, 'zfnet', 56)
    data = SimpleNamespace(steps_per_epoch=20, train=lambda epoch: (None, 56), eval=lambda: None, sizes=[56],
                           classes=[f'c{i}' for i in range(10)])
    # compilation 1 s; a step 2 ms: the steady seconds per step are ~0.002, the compiling sink's ~0.1
    model = SinkingModel(compile_seconds=1.0, step_seconds=0.002)
    loop = Loop.create(args, ctx, net, data, model, None, TrainState())
    loss, _, _ = train.train_one_epoch(args, ctx, loop, data, 0)
    log = capsys.readouterr().out
    assert model.calls == [(2, 10, 0)] and model.steps_run == 20     # one pass, two sinks of 10
    assert loop.monitor.losses == [2.5, 2.0] and loss == pytest.approx(2.25)
    assert 'epoch: 1 step: 20, loss is 2.000000' in log
    assert train.summarize(args, ctx, loop) == 0
    record = json.loads((tmp_path / 'ZFNet_bs4_1p_perf.json').read_text())
    assert record['warmup_steps'] == 10 and record['steady_steps'] == 10 and record['steps'] == 20
    assert record['dataset_sink_mode'] is True and record['sink_size'] == 10 and record['sinks_per_epoch'] == 2
    assert record['warmup_seconds'] >= 1.0
    # sleeps overshoot on a loaded machine; the compiling sink's 0.1 s per step would still be far above this
    assert record['sec_per_step'] < 0.05


def test_a_sink_mode_performance_run_on_cpu_records_steady_steps(noise_imagenet, tmp_path):
    """``--dataset_sink_mode=true`` on CPU through test/train_performance_1p.sh: MindSpore trains per step there,
    and the run says so and records it; its warm-up (the first fifth of the one epoch) is kept apart from its steady
    steps. Before, the run believed it sank and rounded its warm-up up to the whole epoch: no steady step."""
    out = tmp_path / 'out'
    proc = run(['bash', RECIPE / 'test' / 'train_performance_1p.sh', f'--data_path={noise_imagenet}',
                f'--output_path={out}', '--batch_size=4', '--train_steps=10', '--device=cpu',
                '--dataset_sink_mode=true', '--train_model=zfnet', '--image_size=56', '--run_eval=false',
                '--vet_images=false', '--keep_prob=1'], timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "MindSpore's CPU backend trains without sink" in proc.stdout
    record = json.loads((out / 'ZFNet_bs4_1p_perf.json').read_text())
    assert record['dataset_sink_mode'] is False and record['sink_size'] is None
    assert record['steps'] == 10 and record['warmup_steps'] == 2 and record['steady_steps'] == 8
