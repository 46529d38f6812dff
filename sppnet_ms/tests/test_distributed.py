"""Two ranks on CPU through scripts/run_distribution_ascend.sh and a 2-device rank table (msrun underneath).

Checks: the banner is printed once, both ranks end with identical weights after training on different data, a
bad rank table fails before anything starts, and killing one rank ends the whole job with a non-zero exit.
"""
import json
import os
import re
import signal
import subprocess
import time

import pytest

from common.banner import parse_banner

from conftest import RECIPE, env, error_lines, run

SCRIPT = RECIPE / 'scripts' / 'run_distribution_ascend.sh'
FLAGS = ['--device=cpu', '--image_size=56', '--batch_size=4', '--run_eval=false', '--vet_images=false',
         '--epoch_size=1']


def _table(path, n=2, **override):
    table = {'version': '1.0', 'server_count': '1', 'status': 'completed',
             'server_list': [{'server_id': '127.0.0.1', 'host_nic_ip': 'reserve',
                              'device': [{'device_id': str(i), 'device_ip': '0.0.0.0', 'rank_id': str(i)}
                                         for i in range(n)]}]}
    table.update(override)
    path.write_text(json.dumps(table))
    return path


def _rank_lines(work, kind):
    found = {}
    for rank in (0, 1):
        text = (work / f'train_parallel{rank}' / 'log').read_text()
        m = re.search(rf'rank {rank}/2: {kind} sha256 (\w+)', text)
        assert m, text[-2000:]
        found[rank] = m.group(1)
    return found


def test_two_ranks_train_on_different_data_and_end_with_identical_weights(noise_imagenet, tmp_path):
    proc = run(['bash', SCRIPT, _table(tmp_path / 'rank_table.json'), noise_imagenet, noise_imagenet, 'zfnet',
                *FLAGS, '--sink_size=2', '--master_port=8141'], cwd=tmp_path, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:]
    work = tmp_path / 'zfnet_train_parallel'
    banner = parse_banner(proc.stdout)
    assert banner['images_per_sec'] > 0
    assert (work / 'train_parallel0' / 'log').read_text().count('Final result') == 1
    assert 'Final result' not in (work / 'train_parallel1' / 'log').read_text()
    record = json.loads((work / 'ZFNet_bs4_2p_acc.json').read_text())
    assert record['rank_size'] == 2 and record['global_batch_size'] == 8 and record['gradients_mean'] is True
    data = _rank_lines(work, 'first batch')
    weights = _rank_lines(work, 'final weights')
    assert data[0] != data[1] and weights[0] == weights[1]
    assert sorted(p.name for p in (work / 'ckpt').iterdir() if p.suffix == '.ckpt') == ['zfnet-1.ckpt']


@pytest.mark.parametrize('problem', ['duplicate_rank', 'server_count'])
def test_bad_rank_table_fails_before_any_process_starts(noise_imagenet, tmp_path, problem):
    table = _table(tmp_path / 't.json')
    data = json.loads(table.read_text())
    if problem == 'duplicate_rank':
        data['server_list'][0]['device'][1]['rank_id'] = '0'
    else:
        data['server_count'] = '2'
    table.write_text(json.dumps(data))
    proc = run(['bash', SCRIPT, table, noise_imagenet, noise_imagenet, 'zfnet', *FLAGS], cwd=tmp_path, timeout=60)
    assert proc.returncode != 0
    errors = error_lines(proc.stdout)
    assert len(errors) == 1 and str(table) in errors[0]
    assert not (tmp_path / 'zfnet_train_parallel').exists()


def _descendants(pid):
    children = {}
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                with open(f'/proc/{entry}/stat') as fh:
                    ppid = int(fh.read().rsplit(')', 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _rank_process(root, rank):
    for pid in _descendants(root):
        try:
            with open(f'/proc/{pid}/cmdline', 'rb') as fh:
                cmd = fh.read()
            with open(f'/proc/{pid}/environ', 'rb') as fh:
                environ = fh.read().split(b'\0')
        except OSError:
            continue
        if b'train.py' in cmd and f'RANK_ID={rank}'.encode() in environ and b'msrun' not in cmd:
            return pid
    return None


def _alive(pid):
    try:
        with open(f'/proc/{pid}/stat') as fh:
            return fh.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


def test_killing_one_rank_ends_the_job_non_zero(noise_imagenet, tmp_path):
    proc = subprocess.Popen(['bash', str(SCRIPT), str(_table(tmp_path / 'rank_table.json')), str(noise_imagenet),
                             str(noise_imagenet), 'zfnet', *FLAGS, '--sink_size=200', '--master_port=8151'],
                            cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    log = tmp_path / 'zfnet_train_parallel' / 'msrun_log' / 'worker_1.log'
    try:
        deadline = time.time() + 240
        while not (log.exists() and 'first batch' in log.read_text(errors='replace')):
            assert proc.poll() is None and time.time() < deadline, 'rank 1 never started training'
            time.sleep(0.5)
        victim, survivor = _rank_process(proc.pid, 1), _rank_process(proc.pid, 0)
        assert victim and survivor, 'rank processes not found'
        os.kill(victim, signal.SIGKILL)
        killed_at = time.time()
        out, _ = proc.communicate(timeout=180)
        assert proc.returncode != 0
        assert time.time() - killed_at < 180
        assert 'distributed job failed' in out
        assert not _alive(survivor), 'rank 0 was left running'
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_two_servers_on_loopback_train_as_one_job(noise_imagenet, tmp_path):
    # a two-server table (127.0.0.1 holds rank 0 and the scheduler, 127.0.0.2 rank 1): each "server" runs the
    # script with its --server_index, as two real hosts would
    table = tmp_path / 'two_servers.json'
    table.write_text(json.dumps({'version': '1.0', 'server_count': '2', 'status': 'completed', 'server_list': [
        {'server_id': f'127.0.0.{i + 1}', 'host_nic_ip': 'reserve',
         'device': [{'device_id': '0', 'device_ip': '0.0.0.0', 'rank_id': str(i)}]} for i in range(2)]}))
    procs = []
    for i in range(2):
        (tmp_path / f'server{i}').mkdir()
        procs.append(subprocess.Popen(['bash', str(SCRIPT), str(table), str(noise_imagenet), str(noise_imagenet),
                                       'zfnet', *FLAGS, '--sink_size=2', f'--server_index={i}', '--master_port=8161'],
                                      cwd=tmp_path / f'server{i}', env=env(), stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, start_new_session=True))
    try:
        outs = [p.communicate(timeout=400)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    assert [p.returncode for p in procs] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    assert parse_banner(outs[0])['images_per_sec'] > 0
    digests = {}
    for i in range(2):
        text = (tmp_path / f'server{i}' / 'zfnet_train_parallel' / f'train_parallel{i}' / 'log').read_text()
        digests[i] = (re.search(rf'rank {i}/2: first batch sha256 (\w+)', text).group(1),
                      re.search(rf'rank {i}/2: final weights sha256 (\w+)', text).group(1))
    assert digests[0][0] != digests[1][0] and digests[0][1] == digests[1][1]
