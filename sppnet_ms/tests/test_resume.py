"""Reliability: --seed determinism, SIGKILL mid-epoch + --resume auto, a truncated newer checkpoint skipped.

Runs use the dropout-free setting (--keep_prob=1): MindSpore keeps the dropout kernel's random state inside
the compiled graph, where it can be neither saved nor restored, so with dropout a resumed run continues
correctly but draws different masks than an uninterrupted one (README, "Differences from the original").

The kill point comes from the run's events (common.events), never from its log: the killed run is watched until
epoch 1's ``checkpoint`` event (emitted once the file is complete) and a ``step`` event of epoch 2 are both
written, then its process group is SIGKILLed; the events it left show that it died mid-epoch 2, after one
checkpoint. With 3 steps per epoch a step event follows every step (the progress cadence, half an epoch), so
at least the epoch's last step and the epoch-2 save lie between the step seen and the next checkpoint.
"""
import csv
import os
import signal
import subprocess
import time

import numpy as np
import pytest
import mindspore as ms

from common import events

from conftest import REFERENCE_STEPS, RECIPE, RUN_TIMEOUT, assert_same_checkpoint, env, reference_cmd, run

STEPS = REFERENCE_STEPS  # steps per epoch (--sink_size); 3 epochs
KILL_WAIT = 600  # seconds until the kill point; a run of these 9 steps took 100-200 s here, loaded


def _weights(path):
    # tensors only: string metadata (train_model) comes back as str
    return {k: v.asnumpy() for k, v in ms.load_checkpoint(str(path)).items() if hasattr(v, 'asnumpy')}


def _epoch_losses(ckpt):
    with open(ckpt / 'summary.csv') as fh:
        return {int(r['epoch']): float(r['train_loss']) for r in csv.DictReader(fh)}


def _mid_epoch_2(found):
    """True once epoch 1's checkpoint is complete and a step of epoch 2 has been reported."""
    return (any(e['event'] == 'checkpoint' and e['epoch'] == 1 for e in found)
            and any(e['event'] == 'step' and e['epoch'] == 2 for e in found))


@pytest.fixture(scope='module')
def killed_and_resumed(noise_imagenet, tmp_path_factory):
    """The same run, SIGKILLed mid-epoch 2, then restarted with --resume auto after a truncated zfnet-2.ckpt is
    planted. Returns (ckpt dir, the events the killed run left, the resumed run's output)."""
    ckpt = tmp_path_factory.mktemp('killed') / 'ckpt'
    proc = subprocess.Popen([str(c) for c in reference_cmd(noise_imagenet, ckpt)], cwd=RECIPE, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + KILL_WAIT
        while not _mid_epoch_2(events.read(ckpt)):
            assert proc.poll() is None, 'training ended before a step of epoch 2 was reported'
            assert time.monotonic() < deadline, f'no step of epoch 2 after {KILL_WAIT} s'
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    at_kill = events.read(ckpt)  # complete now: the writer is dead
    # the kill point, shown by the events: epoch 1's checkpoint done, epoch 2 begun and not finished
    assert [(e['epoch'], e['global_step']) for e in at_kill if e['event'] == 'checkpoint'] == [(1, STEPS)]
    reached = max(e['global_step'] for e in at_kill if e['event'] == 'step')
    assert STEPS < reached < 2 * STEPS, f'killed at global step {reached}, not mid-epoch 2'
    # so epoch 2 has no checkpoint and planting a truncated one (a save cut short outside our atomic writer)
    # replaces no real file; the resumed run must report it and skip it
    planted = ckpt / 'zfnet-2.ckpt'
    assert not planted.exists()
    planted.write_bytes((ckpt / 'zfnet-1.ckpt').read_bytes()[:4096])
    resumed = run(reference_cmd(noise_imagenet, ckpt, '--resume=auto'), timeout=RUN_TIMEOUT)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    return ckpt, at_kill, resumed.stdout


def test_sigkill_then_resume_auto_ends_with_the_same_weights(killed_and_resumed, uninterrupted):
    ckpt, at_kill, out = killed_and_resumed
    killed_pid = at_kill[0]['pid']
    reached = max(e['global_step'] for e in at_kill if e['event'] == 'step')
    assert f"resume: skipping {ckpt / 'zfnet-2.ckpt'}" in out
    resumed = events.last(ckpt, 'resume')
    assert resumed['pid'] != killed_pid
    # restored from epoch 1's checkpoint: behind the step the killed run had reached, so steps were retrained
    assert (resumed['checkpoint'], resumed['epoch'], resumed['global_step']) == (str(ckpt / 'zfnet-1.ckpt'), 1, 3)
    assert resumed['global_step'] < reached
    mine = [e for e in events.read(ckpt) if e['pid'] == resumed['pid']]
    steps = [(e['global_step'], e['loss']) for e in mine if e['event'] == 'step']
    # every step after the checkpoint, retrained once (none of epoch 1 again), with the uninterrupted run's losses
    assert [s for s, _ in steps] == list(range(STEPS + 1, 3 * STEPS + 1))
    reference = {e['global_step']: e['loss'] for e in events.read(uninterrupted, 'step')}
    assert [loss for _, loss in steps] == [reference[s] for s, _ in steps]
    saved = [(e['epoch'], e['global_step'], e['path']) for e in mine if e['event'] == 'checkpoint']
    assert saved == [(2, 6, str(ckpt / 'zfnet-2.ckpt')), (3, 9, str(ckpt / 'zfnet-3.ckpt'))]
    # the files: weights, momenta, step counter and metadata, bit-identical to the uninterrupted run's
    for name in ('zfnet-2.ckpt', 'zfnet-3.ckpt'):
        assert_same_checkpoint(uninterrupted / name, ckpt / name)
    a, b = _weights(uninterrupted / 'zfnet-3.ckpt'), _weights(ckpt / 'zfnet-3.ckpt')
    assert a.keys() == b.keys() and 'moments.fc1.weight' in a and 'global_step' in a
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=1e-5, atol=1e-7, err_msg=name)
    assert _epoch_losses(ckpt).keys() == {1, 2, 3}
    assert _epoch_losses(ckpt) == _epoch_losses(uninterrupted)


def test_same_seed_gives_identical_first_epoch(killed_and_resumed, uninterrupted):
    # the killed run's first epoch was a second run with the same seed: its loss and weights match exactly
    ckpt = killed_and_resumed[0]
    assert _epoch_losses(ckpt)[1] == _epoch_losses(uninterrupted)[1]
    a, b = _weights(uninterrupted / 'zfnet-1.ckpt'), _weights(ckpt / 'zfnet-1.ckpt')
    for name in a:
        np.testing.assert_array_equal(b[name], a[name], err_msg=name)


def test_resume_after_a_class_folder_was_renamed_is_refused(noise_imagenet, uninterrupted, tmp_path):
    """The checkpoint's head learned label 9 as training's last folder; with that folder renamed the head still
    fits (10 classes) and the run would go on training label 9 under another name without a word. One ERROR line
    naming the file, exit 2."""
    root = tmp_path / 'imagenet'
    names = sorted(p.name for p in (noise_imagenet / 'train').iterdir() if p.is_dir())
    for split in ('train', 'val'):
        (root / split).mkdir(parents=True)
        for i, name in enumerate(names):
            new = f'{name}_renamed' if i == 9 else name
            (root / split / new).symlink_to((noise_imagenet / split / name).resolve())
    ckpt = uninterrupted / 'zfnet-1.ckpt'
    proc = run(reference_cmd(root, tmp_path / 'ckpt', f'--resume={ckpt}'), timeout=RUN_TIMEOUT)
    errors = [line for line in proc.stdout.splitlines() if line.startswith('ERROR')]
    assert proc.returncode == 2 and errors == [
        f'ERROR: {ckpt}: trained on other classes (label 9 was {names[9]!r}, the training data now has '
        f"{names[9] + '_renamed'!r}); resuming would train its labels on other images"], proc.stdout[-2000:]
