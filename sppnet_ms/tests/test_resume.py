"""Reliability: --seed determinism, SIGKILL mid-training + --resume auto, corrupt checkpoints skipped.

Runs use the dropout-free setting (--keep_prob=1): MindSpore keeps the dropout kernel's random state inside
the compiled graph, where it can be neither saved nor restored, so with dropout a resumed run continues
correctly but draws different masks than an uninterrupted one (README, "Differences from the original").
"""
import csv
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import mindspore as ms

from common import events

from conftest import RECIPE, env, run

FLAGS = ['--train_model=zfnet', '--image_size=56', '--batch_size=4', '--sink_size=3', '--epoch_size=3',
         '--keep_prob=1', '--run_eval=false', '--keep_checkpoint_max=5', '--device_target=CPU', '--seed=7']


def _cmd(data, ckpt, *extra):
    return [sys.executable, RECIPE / 'train.py', f'--train_path={data}', f'--eval_path={data}',
            f'--ckpt_path={ckpt}', *FLAGS, *extra]


def _weights(path):
    # tensors only: string metadata (train_model) comes back as str
    return {k: v.asnumpy() for k, v in ms.load_checkpoint(str(path)).items() if hasattr(v, 'asnumpy')}


def _epoch_losses(ckpt):
    with open(ckpt / 'summary.csv') as fh:
        return {int(r['epoch']): float(r['train_loss']) for r in csv.DictReader(fh)}


@pytest.fixture(scope='module')
def uninterrupted(noise_imagenet, tmp_path_factory):
    ckpt = tmp_path_factory.mktemp('full')
    proc = run(_cmd(noise_imagenet, ckpt))
    assert proc.returncode == 0, proc.stdout[-3000:]
    return ckpt


@pytest.fixture(scope='module')
def killed_and_resumed(noise_imagenet, tmp_path_factory):
    """The same run, SIGKILLed during epoch 2, then restarted with --resume auto; returns (ckpt dir, output)."""
    ckpt = tmp_path_factory.mktemp('killed') / 'ckpt'
    proc = subprocess.Popen([str(c) for c in _cmd(noise_imagenet, ckpt)], cwd=RECIPE, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 240
        while not (ckpt / 'zfnet-1.ckpt').exists():
            assert proc.poll() is None, 'training ended before its first checkpoint'
            assert time.time() < deadline, 'no checkpoint after 240 s'
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)  # during epoch 2: its checkpoint is not written yet
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (ckpt / 'zfnet-3.ckpt').exists()
    # a truncated newer checkpoint (a save cut short outside our atomic writer) must be skipped, and said so
    (ckpt / 'zfnet-2.ckpt').write_bytes((ckpt / 'zfnet-1.ckpt').read_bytes()[:4096])
    resumed = run(_cmd(noise_imagenet, ckpt, '--resume=auto'))
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    return ckpt, resumed.stdout


def test_sigkill_then_resume_auto_ends_with_the_same_weights(killed_and_resumed, uninterrupted):
    ckpt, out = killed_and_resumed
    assert f"resume: skipping {ckpt / 'zfnet-2.ckpt'}" in out
    resumed = events.last(ckpt, 'resume')
    assert (resumed['checkpoint'], resumed['epoch'], resumed['global_step']) == (str(ckpt / 'zfnet-1.ckpt'), 1, 3)
    saved = [(e['epoch'], e['global_step'], e['path']) for e in events.read(ckpt, 'checkpoint')
             if e['pid'] == resumed['pid']]
    assert saved == [(2, 6, str(ckpt / 'zfnet-2.ckpt')), (3, 9, str(ckpt / 'zfnet-3.ckpt'))]
    a, b = _weights(uninterrupted / 'zfnet-3.ckpt'), _weights(ckpt / 'zfnet-3.ckpt')
    assert a.keys() == b.keys() and 'moments.fc1.weight' in a and 'global_step' in a
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=1e-5, atol=1e-7, err_msg=name)
    assert _epoch_losses(ckpt).keys() == {1, 2, 3}


def test_same_seed_gives_identical_first_epoch(killed_and_resumed, uninterrupted):
    # the killed run's first epoch was a second run with the same seed: its loss and weights match exactly
    ckpt = killed_and_resumed[0]
    assert _epoch_losses(ckpt)[1] == _epoch_losses(uninterrupted)[1]
    a, b = _weights(uninterrupted / 'zfnet-1.ckpt'), _weights(ckpt / 'zfnet-1.ckpt')
    for name in a:
        np.testing.assert_array_equal(b[name], a[name], err_msg=name)
