"""Two ranks on CPU through scripts/run_distribution_ascend.sh and a 2-device rank table (msrun underneath).

Checks: the banner is printed once, both ranks end with identical weights after training on different data (the
test loads each rank's checkpoint, --rank_checkpoints, and compares every entry), their losses and final weights
match a 1-device run of the same global batch, a bad rank table fails before anything starts, killing one rank
ends the whole job with a non-zero exit, and a two-server table runs as one job on loopback addresses.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from common import events
from common.banner import parse_banner
from common.testing import (free_port, kill_cases, job_processes, kill_job, kill_rank_after_checkpoint, make_noise, tag_job,
                            wait_job_gone, write_rank_table)

from conftest import RECIPE, assert_same_checkpoint, ckpt_entries, env, error_lines, run

SCRIPT = RECIPE / 'scripts' / 'run_distribution_ascend.sh'
FLAGS = ['--device=cpu', '--image_size=56', '--batch_size=4', '--run_eval=false', '--vet_images=false',
         '--epoch_size=1']
# the 2-rank jobs took up to 221 s (with a 1-device run beside them) with the 2 cores shared by five test suites;
# the limits only catch hangs
JOB_TIMEOUT = 900
START_WAIT = 600  # until rank 1 has started
NOTICE_LIMIT = 180  # from killing rank 1 to the job's end: 39 s measured here, loaded (msrun's heartbeat)


@pytest.fixture(scope='module')
def one_global_batch(tmp_path_factory):
    """8 noise JPEGs: one global batch of 2 x 4 (or 1 x 8), so a 1-device run sees exactly the 2 ranks' data.
    Their labels cover 6 of the 10 classes, and the noise val folders hold classes training never saw, so the
    runs (which do not evaluate) are pointed at train/ for --eval_path too."""
    return make_noise(tmp_path_factory.mktemp('noise8'), 'imagenet', 8, 8) / 'imagenet' / 'train'


# Loss parity between 2 ranks x batch 4 and 1 device x batch 8. Made comparable by construction: the same seed,
# hence the same initial weights (checked by digest); the training set is one global batch, so every epoch is one
# step whose global batch is the same 8 images in both runs (the 2 ranks' shards together = the 1-device batch,
# whatever order the samplers pick); no augmentation and no dropout (both draw per-process random numbers);
# --init=he so that the logits, hence the loss, depend on the data (N(0, 0.01) gives ~ln 10 for any input).
# ZFNet has no BatchNorm (LRN is per sample) and DATA_PARALLEL averages the gradients of equal per-rank
# batches, so every step of the 2-rank job is the 1-device step up to float32 summation order: all three
# epochs' losses (mean over ranks) must agree closely, not only the first.
PARITY = ['--image_size=56', '--run_eval=false', '--vet_images=false', '--epoch_size=3', '--augment=false',
          '--keep_prob=1.0', '--init=he']
# 2 ranks' final checkpoint (after 3 averaged steps) against the 1-device run's, every weight and momentum:
# float32 summation order only. Measured here (AMD EPYC, AVX2): at most 3.0e-8 on the weights (scale 0.09-0.5)
# and 3.1e-7 on the momenta (moments.fc3.weight, scale 0.11); 2e-6 leaves a 6x margin. Both ranks reading the
# same shard, or summed gradients, move them far more (mutation checks, see the README).
PARITY_ATOL = 2e-6


def test_two_ranks_train_on_different_data_in_lockstep_and_match_one_device_loss(one_global_batch, tmp_path):
    data = one_global_batch
    single = tmp_path / 'single'
    one_device = subprocess.Popen(
        [sys.executable, RECIPE / 'train.py', '--train_model=zfnet', f'--train_path={data}', f'--eval_path={data}',
         '--device_target=CPU', '--batch_size=8', f'--ckpt_path={single}', *PARITY],
        cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        table = write_rank_table(tmp_path / 'rank_table.json', 2)
        proc = run(['bash', SCRIPT, table, data, data, 'zfnet', '--device=cpu', '--batch_size=4', *PARITY,
                    '--rank_checkpoints=true', f'--master_port={free_port()}'], cwd=tmp_path, timeout=JOB_TIMEOUT)
        single_out = one_device.communicate(timeout=JOB_TIMEOUT)[0]
    finally:
        if one_device.poll() is None:
            one_device.kill()
            one_device.wait()
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert one_device.returncode == 0, single_out[-3000:]
    work = tmp_path / 'zfnet_train_parallel'
    banner = parse_banner(proc.stdout)
    assert banner['images_per_sec'] > 0
    assert (work / 'train_parallel0' / 'log').read_text().count('Final result') == 1
    assert 'Final result' not in (work / 'train_parallel1' / 'log').read_text()
    record = json.loads((work / 'ZFNet_bs4_2p_acc.json').read_text())
    assert record['rank_size'] == 2 and record['global_batch_size'] == 8 and record['gradients_mean'] is True
    assert sorted(p.name for p in (work / 'ckpt').iterdir() if p.suffix == '.ckpt') == ['zfnet-2.ckpt', 'zfnet-3.ckpt']
    # the two replicas, read from their own files: every weight, momentum and the step counter bit-identical
    assert sorted(p.name for p in (work / 'ckpt' / 'rank_1').iterdir()) == ['zfnet-2.ckpt', 'zfnet-3.ckpt']
    for name in ('zfnet-2.ckpt', 'zfnet-3.ckpt'):
        assert_same_checkpoint(work / 'ckpt' / name, work / 'ckpt' / 'rank_1' / name)
    # and the 1-device run's final weights: the shards made up the global batch and the gradients were averaged
    two, one_dev = ckpt_entries(work / 'ckpt' / 'zfnet-3.ckpt'), ckpt_entries(single / 'zfnet-3.ckpt')
    assert two.keys() == one_dev.keys()
    assert two['global_step'].item() == one_dev['global_step'].item() == 3
    for name in (n for n, v in one_dev.items() if isinstance(v, np.ndarray) and v.dtype == np.float32):
        np.testing.assert_allclose(two[name], one_dev[name], rtol=0, atol=PARITY_ATOL, err_msg=name)

    # parity with the 1-device run of the same global batch
    initial = _by_rank(work, 'initial_weights', 'digest')
    assert initial[0] == initial[1] == [e['digest'] for e in events.read(single, 'initial_weights')]
    # every epoch is one step, so each step event's loss is the epoch's (per-rank) loss
    losses = _by_rank(work, 'step', 'loss')
    two_ranks = [(a + b) / 2 for a, b in zip(losses[0], losses[1])]
    one = [e['loss'] for e in events.read(single, 'step')]
    assert len(one) == len(two_ranks) == 3, single_out[-2000:]
    assert losses[0] != losses[1]  # the ranks did see different images
    assert two_ranks[0] == pytest.approx(one[0], abs=1e-5)  # initial weights + the global batch only
    assert two_ranks[1:] == pytest.approx(one[1:], abs=1e-4)  # after averaged updates: summation order only
    assert one[0] != pytest.approx(one[2], abs=1e-3)  # the weights did move, so the later steps compare updates


def _by_rank(out, kind, key):
    """{rank: [event[key], ...]} of the run's ``kind`` events in ``out``, oldest first."""
    found = {0: [], 1: []}
    for e in events.read(out, kind):
        found[e['rank']].append(e[key])
    assert found[0] and found[1], events.read(out)
    return found


@pytest.mark.parametrize('problem', ['duplicate_rank', 'server_count'])
def test_bad_rank_table_fails_before_any_process_starts(noise_imagenet, tmp_path, problem):
    table = write_rank_table(tmp_path / 't.json', 2)
    data = json.loads(table.read_text())
    if problem == 'duplicate_rank':
        data['server_list'][0]['device'][1]['rank_id'] = '0'
    else:
        data['server_count'] = '2'
    table.write_text(json.dumps(data))
    # a port of its own even here: were the table accepted, msrun would bind it
    proc = run(['bash', SCRIPT, table, noise_imagenet, noise_imagenet, 'zfnet', *FLAGS, f'--master_port={free_port()}'],
               cwd=tmp_path, timeout=60)
    assert proc.returncode != 0
    errors = error_lines(proc.stdout)
    assert len(errors) == 1 and str(table) in errors[0]
    assert not (tmp_path / 'zfnet_train_parallel').exists()


# --- a lost rank, then the same command with --resume auto (issue #22) -----------------------------------------
# ZFNet at 56 px, 4 epochs of 3 steps at batch 4 per rank, a checkpoint after every epoch (all kept), no dropout
# (its random state lives in the compiled graph and cannot be resumed: test_resume.py), seed 7. Rank 0 writes
# ckpt/, rank 1 (--rank_checkpoints) ckpt/rank_1/: each rank resumes from its own copy, and the test compares both.
# 4 epochs: after rank 0's kill past the second checkpoint, steps are left to kill it in on a fast machine too.
EPOCHS, STEPS = 4, 3
RESUME_FLAGS = ['--device=cpu', '--image_size=56', '--batch_size=4', '--run_eval=false', '--vet_images=false',
                f'--epoch_size={EPOCHS}', f'--sink_size={STEPS}', '--keep_prob=1', f'--keep_checkpoint_max={EPOCHS}',
                '--rank_checkpoints=true', '--seed=7']
RESUME_TIMEOUT = 400  # a resume of ranks at different steps would hang in the all-reduce: fail well before


def _resume_cmd(table, data, *extra):
    return [str(c) for c in ('bash', SCRIPT, table, data, data, 'zfnet', *RESUME_FLAGS, *extra)]


def _ckpt(work, rank, epoch):
    return work / 'ckpt' / ('' if rank == 0 else f'rank_{rank}') / f'zfnet-{epoch}.ckpt'


def _job(cmd, cwd, timeout):
    """Run the launcher to its end; kill whatever of the job a time-out left running."""
    job_env = tag_job({**env(), 'MASTER_PORT': str(free_port())})
    try:
        return subprocess.run(cmd, cwd=cwd, env=job_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=timeout)
    finally:
        for pid in job_processes(job_env):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope='module')
def straight_2p(noise_imagenet, tmp_path_factory):
    """The uninterrupted 2-rank run every kill case is compared with; its work folder."""
    tmp = tmp_path_factory.mktemp('straight_2p')
    proc = _job(_resume_cmd(write_rank_table(tmp / 't.json', 2), noise_imagenet), tmp, JOB_TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-3000:]
    return tmp / 'zfnet_train_parallel'


# Measured on this 2-core machine at load average 16-20 (about ten training jobs of five suites on the 2 cores):
# the uninterrupted run 428 s, the cases 415 s (rank 1) and 584 s (rank 0) — far over the 3-minute budget
# there; not measured on a quiet machine. The fixed part is two msrun start-ups with graph compilation and
# msrun's ~40 s to notice the lost rank; the 12 steps are the small part.
@pytest.mark.parametrize('victim', kill_cases([1, 0], default=0))
def test_a_rank_killed_after_a_checkpoint_resumes_to_the_uninterrupted_weights(victim, noise_imagenet, straight_2p,
                                                                                 tmp_path):
    """SIGKILL of one rank (rank 1; rank 0, msrun's first worker) once it trains past a checkpoint: the job exits
    non-zero and leaves no process; the same command with --resume=auto restarts both ranks from the SAME global
    step (all-gathered agreement, common.ms.resume), and every entry of both ranks' final checkpoints (weights,
    momenta, global_step, rank count) is bit-identical to the uninterrupted 2-rank run's, as the single-process
    resume is (test_resume.py).

    Rank 0's case: killed after the second checkpoint, then its newest checkpoint removed, as a kill in the
    middle of that save leaves it (atomic save: the previous file stays, the new one never appears): the ranks
    then hold different newest steps, and only their agreement makes them restart from the same one.
    """
    table = write_rank_table(tmp_path / 't.json', 2)
    cmd = _resume_cmd(table, noise_imagenet)
    work = tmp_path / 'zfnet_train_parallel'
    job_env = tag_job({**env(), 'MASTER_PORT': str(free_port())})
    with open(tmp_path / 'killed.log', 'w') as log:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=job_env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            killed = kill_rank_after_checkpoint(proc, work, victim, checkpoints=2 if victim == 0 else 1,
                                                timeout=START_WAIT)
            t0 = time.monotonic()
            proc.wait(timeout=NOTICE_LIMIT)
            assert time.monotonic() - t0 < NOTICE_LIMIT
            assert proc.returncode != 0
            wait_job_gone(job_env)
        finally:
            kill_job(proc, job_env)
    assert 'distributed job failed' in (tmp_path / 'killed.log').read_text()
    saved = {r: sorted(e['global_step'] for e in events.read(work, 'checkpoint') if e['rank'] == r) for r in (0, 1)}
    assert killed['global_step'] > saved[victim][-1] >= STEPS  # killed past its newest checkpoint
    expected = saved[victim][-1]
    if victim == 0:
        newest = _ckpt(work, 0, expected // STEPS)
        assert newest.is_file() and saved[1][-1] == expected  # both ranks hold it, until ...
        newest.unlink()  # ... the kill came in the middle of this save: the atomic save never put it in place
        expected -= STEPS
    n_before = len(events.read(work))

    proc = _job([*cmd, '--resume=auto'], tmp_path, RESUME_TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-3000:]
    after = events.read(work)[n_before:]
    resumed = sorted((e for e in after if e['event'] == 'resume'), key=lambda e: e['rank'])
    assert [e['rank'] for e in resumed] == [0, 1]
    assert [e['global_step'] for e in resumed] == [expected, expected]  # the same step on every rank
    for r, e in enumerate(resumed):  # each rank from its own copy of that step
        assert e['checkpoint'] == str(_ckpt(work, r, expected // STEPS))
    for r in (0, 1):  # it trained on from there: the steps after the agreed one, each once
        assert [e['global_step'] for e in after if e['event'] == 'step' and e['rank'] == r] == \
            list(range(expected + 1, EPOCHS * STEPS + 1))
        a, _ = assert_same_checkpoint(_ckpt(straight_2p, r, EPOCHS), _ckpt(work, r, EPOCHS))
        assert int(a['zoo_world_size']) == 2


def test_a_two_rank_checkpoint_is_refused_by_one_process(straight_2p, noise_imagenet, tmp_path):
    ckpt = tmp_path / 'ckpt'
    shutil.copytree(straight_2p / 'ckpt', ckpt, ignore=shutil.ignore_patterns('rank_*'))
    newest = ckpt / f'zfnet-{EPOCHS}.ckpt'
    proc = run([sys.executable, RECIPE / 'train.py', f'--train_path={noise_imagenet}',
                f'--eval_path={noise_imagenet}', f'--ckpt_path={ckpt}', '--train_model=zfnet', *RESUME_FLAGS[1:],
                '--device_target=CPU', f'--epoch_size={EPOCHS + 1}', '--resume=auto'], cwd=tmp_path, timeout=600)
    assert proc.returncode == 2, proc.stdout[-3000:]
    (error,) = error_lines(proc.stdout)
    assert error.startswith(f'ERROR: {newest}: written by a 2-rank job, this job has 1'), error
    assert not events.read(ckpt, 'step') and not events.read(ckpt, 'resume')  # nothing trained
    assert sorted(p.name for p in ckpt.glob('*.ckpt')) == sorted(
        p.name for p in (straight_2p / 'ckpt').glob('*.ckpt'))


def test_a_one_process_checkpoint_is_refused_by_two_ranks(noise_imagenet, tmp_path):
    work = tmp_path / 'zfnet_train_parallel'
    one = work / 'ckpt' / 'zfnet-1.ckpt'
    # a one-process run into the folder the 2-rank script uses
    first = run([sys.executable, RECIPE / 'train.py', f'--train_path={noise_imagenet}',
                 f'--eval_path={noise_imagenet}', f'--ckpt_path={work / "ckpt"}', f'--output_path={work}',
                 '--train_model=zfnet', *RESUME_FLAGS[1:], '--device_target=CPU', '--epoch_size=1', '--sink_size=1'],
                cwd=tmp_path, timeout=600)
    assert first.returncode == 0 and one.is_file(), first.stdout[-3000:]
    n_before = len(events.read(work))
    proc = _job(_resume_cmd(write_rank_table(tmp_path / 't.json', 2), noise_imagenet, '--resume=auto'), tmp_path,
                JOB_TIMEOUT)
    assert proc.returncode == 2, proc.stdout[-3000:]
    (error,) = error_lines(proc.stdout)  # rank 0's line; the launcher adds none for a rank's own exit-2 refusal
    assert error.startswith(f'ERROR: {one}: written by a 1-rank job, this job has 2'), error
    after = events.read(work)[n_before:]
    assert not [e for e in after if e['event'] in ('step', 'resume', 'checkpoint')]  # nothing trained
    assert sorted(p.name for p in work.glob('ckpt/**/*.ckpt')) == [one.name]


def test_two_servers_on_loopback_train_as_one_job(noise_imagenet, tmp_path):
    # a two-server table (127.0.0.1 holds rank 0 and the scheduler, 127.0.0.2 rank 1): each "server" runs the
    # script with its --server_index, as two real hosts would
    table = write_rank_table(tmp_path / 'two_servers.json', 1, servers=('127.0.0.1', '127.0.0.2'))
    port, procs = free_port(), []
    for i in range(2):
        (tmp_path / f'server{i}').mkdir()
        procs.append(subprocess.Popen(['bash', str(SCRIPT), str(table), str(noise_imagenet), str(noise_imagenet),
                                       'zfnet', *FLAGS, '--sink_size=2', '--rank_checkpoints=true',
                                       '--init=he', f'--server_index={i}', f'--master_port={port}'],
                                      cwd=tmp_path / f'server{i}', env=env(), stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, start_new_session=True))
    try:
        outs = [p.communicate(timeout=JOB_TIMEOUT)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    assert [p.returncode for p in procs] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    assert parse_banner(outs[0])['images_per_sec'] > 0
    work = [tmp_path / f'server{i}' / 'zfnet_train_parallel' for i in range(2)]
    # each server's rank wrote its own checkpoint: the same weights, momenta and step counter, bit for bit
    assert_same_checkpoint(work[0] / 'ckpt' / 'zfnet-1.ckpt', work[1] / 'ckpt' / 'rank_1' / 'zfnet-1.ckpt')
    # ... after steps on different images: the same initial weights gave different losses at the first step
    # (--init=he: with the original N(0, 0.01) init every input gives a loss of ~ln 10, equal to float32 precision)
    first = {i: [e['loss'] for e in events.read(work[i], 'step') if e['rank'] == i and e['global_step'] == 1]
             for i in range(2)}
    assert len(first[0]) == len(first[1]) == 1 and first[0] != first[1]
