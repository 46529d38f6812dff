"""common/ms: the MindSpore helpers both MindSpore recipes use (step monitor, checkpoint series, weight digest).

They live in common/ but need MindSpore, so their tests run here, in the MindSpore environment.
"""
import ast
import os

import mindspore as ms
import mindspore.dataset as mds
import numpy as np
import pytest
from mindspore import nn
from mindspore.train import Model

from common import events
from common.checkpoint import CheckpointError
from common.digest import weights_digest
from common.imagefolder import ImageFolderError
from common.ms import (CheckpointSeries, NonFiniteLossError, StepMonitor, cell_digest, emit_initial_weights,
                       load_ckpt, load_into, meta_value, save_ckpt)
from common.ms.checkpoint import WORLD_KEY, check_resume_classes, classes_meta, classes_of
from common.ms.resume import agree_resume
from common.progress import Progress
from common.throughput import ThroughputMeter

from conftest import ROOT

ms.set_context(mode=ms.GRAPH_MODE)
ms.set_device('CPU')


def _dataset(n=12, batch=3, bad=False):
    rs = np.random.RandomState(0)
    x = rs.rand(n, 4).astype(np.float32) * (np.inf if bad else 1.0)
    return mds.NumpySlicesDataset({'x': x, 'y': (np.arange(n) % 2).astype(np.int32)}, shuffle=False).batch(batch)


def _model(net):
    return Model(net, nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction='mean'),
                 nn.Momentum(net.trainable_params(), 0.1, 0.9))


def _monitor(out, total, every, **kw):
    meter = ThroughputMeter(3, warmup_steps=1)
    return StepMonitor(meter, Progress(total, 3, every=every), lambda i: 0.1 * (i + 1), events_dir=out, **kw), meter


def test_step_events_follow_the_progress_cadence_with_global_steps(tmp_path, capsys):
    model, (monitor, meter) = _model(nn.Dense(4, 2)), _monitor(tmp_path, 8, 3, rank=1)
    for epoch in range(2):
        monitor.begin_epoch(epoch + 1, epoch * 4)
        model.train(epoch + 1, _dataset(), callbacks=[monitor], dataset_sink_mode=False, initial_epoch=epoch)
    steps = events.read(tmp_path, 'step')
    # every 3rd step and the last, as the plain progress lines
    assert [(e['epoch'], e['step'], e['global_step'], e['rank']) for e in steps] == [(1, 3, 3, 1), (2, 2, 6, 1),
                                                                                       (2, 4, 8, 1)]
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith('epoch ')]
    assert [line.split(' [')[0] for line in printed] == ['epoch 1 step 3', 'epoch 2 step 2', 'epoch 2 step 4']
    assert 'lr 0.8 ' in printed[-1]  # lr_of_step gets the global step (from 0)
    assert meter.total_steps == 8 and meter.steady_steps == 7
    assert steps[-1]['loss'] == pytest.approx(monitor.losses[-1]) and len(monitor.losses) == 4


def test_step_events_are_written_where_the_progress_line_is_off(tmp_path):
    # a non-zero rank prints no progress but still records its steps
    meter = ThroughputMeter(3)
    monitor = StepMonitor(meter, Progress(4, 3, every=2, enabled=False), lambda i: 0.1, events_dir=tmp_path)
    monitor.begin_epoch(1, 0)
    _model(nn.Dense(4, 2)).train(1, _dataset(), callbacks=[monitor], dataset_sink_mode=False)
    assert [e['global_step'] for e in events.read(tmp_path, 'step')] == [2, 4]


def test_non_finite_loss_is_a_recipe_error_with_the_hint(tmp_path):
    monitor, _ = _monitor(tmp_path, 4, 1, hint='lower --lr_init')
    monitor.begin_epoch(1, 0)
    with pytest.raises(NonFiniteLossError) as err:
        _model(nn.Dense(4, 2)).train(1, _dataset(bad=True), callbacks=[monitor], dataset_sink_mode=False)
    assert isinstance(err.value, FloatingPointError)
    assert str(err.value).startswith('loss is nan at epoch 1 step 1;') and str(err.value).endswith('lower --lr_init')


def test_a_second_graph_key_keeps_its_first_step_out_of_the_meter(tmp_path):
    model, (monitor, meter) = _model(nn.Dense(4, 2)), _monitor(None, 8, 50)
    for epoch, key in enumerate((224, 180)):
        monitor.begin_epoch(epoch + 1, epoch * 4, graph_key=key)
        model.train(epoch + 1, _dataset(), callbacks=[monitor], dataset_sink_mode=False, initial_epoch=epoch)
    assert meter.total_steps == 7 and monitor.compile_seconds > 0
    assert not (tmp_path / events.FILE).exists()


@pytest.mark.parametrize('pattern, step', [('zfnet-{epoch}.ckpt', None),
                                           ('train_tinydarknet_imagenet-{epoch}_{step}.ckpt', 4)])
def test_series_saves_emits_after_the_file_and_keeps_the_newest(tmp_path, pattern, step):
    net = nn.Dense(4, 2)
    out = tmp_path / 'out'
    series = CheckpointSeries(tmp_path / 'ckpt', pattern, keep=2, events_dir=out, rank=0, log=lambda *a: None)
    for epoch in (1, 2, 10):
        path = series.save(net, epoch, epoch * 4, {'epoch': epoch}, step=step)
        event = events.last(out, 'checkpoint')
        assert event['path'] == os.path.abspath(path) and os.path.isfile(event['path'])
        assert (event['epoch'], event['global_step']) == (epoch, epoch * 4)
    # numeric order, not text order: epoch 10 is the newest
    assert [p.name for p in series.files()] == [pattern.format(epoch=e, step=step) for e in (2, 10)]
    assert meta_value(load_ckpt(series.find_resume()), 'epoch') == 10
    (tmp_path / 'ckpt' / 'other-3.ckpt').write_bytes(b'x')  # another run's names are not the series'
    assert len(series.files()) == 2


def test_find_resume_skips_a_truncated_newest_file_and_removes_stale_temps(tmp_path):
    logged = []
    series = CheckpointSeries(tmp_path, 'm-{epoch}.ckpt', log=logged.append)
    good = series.save(nn.Dense(4, 2), 1, 3)
    series.path(2).write_bytes(good.read_bytes()[:-1])  # a save cut short outside the atomic writer
    stale = tmp_path / '.m-3.ckpt.abc123.tmp'
    stale.write_bytes(b'half a save')
    assert series.find_resume() == good
    assert not stale.exists() and any('skipping' in line and 'm-2.ckpt' in line for line in logged)


class _ThreadRanks:
    """``agree_resume`` of several ranks run in threads, with an all-gather made of a barrier (no cluster needed):
    the same calls in the same order on every rank, as MindSpore's AllGather requires."""

    def __init__(self, world):
        import threading
        self.world, self.rows, self.barrier = world, [None] * world, threading.Barrier(world, timeout=30)

    def gather(self, rank):
        def _gather(row):
            self.barrier.wait()
            self.rows[rank] = list(row)
            self.barrier.wait()
            rows = np.asarray(self.rows)
            self.barrier.wait()  # nobody overwrites its row before every rank has read them all
            return rows
        return _gather

    def run(self, series_of, **kw):
        import threading
        results, logs = [None] * self.world, [[] for _ in range(self.world)]

        def _rank(r):
            try:
                results[r] = agree_resume(series_of(r), lambda p: series_of(r)._order(p)[0] * 4, self.world, r,
                                          log=logs[r].append, gather=self.gather(r), **kw)
            except Exception as exc:  # noqa: BLE001 - handed to the test
                results[r] = exc
        threads = [threading.Thread(target=_rank, args=(r,)) for r in range(self.world)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        return results, logs


def _rank_series(tmp_path, world, epochs_by_rank, saved_world=None):
    series = [CheckpointSeries(tmp_path / str(r), 'm-{epoch}.ckpt', world=saved_world or world, log=lambda *a: None)
              for r in range(len(epochs_by_rank))]
    for r, epochs in enumerate(epochs_by_rank):
        for e in epochs:
            series[r].save(nn.Dense(4, 2), e, e * 4, {'epoch_num': e, 'rank': r})
    return series


def test_ranks_resume_from_the_newest_step_all_hold_each_from_its_own_file(tmp_path):
    # rank 1 was killed in the middle of epoch 3's save: its newest is epoch 2, rank 0's is epoch 3
    series = _rank_series(tmp_path, 2, [(1, 2, 3), (1, 2)])
    results, _ = _ThreadRanks(2).run(lambda r: series[r])
    assert [(res.global_step, meta_value(res.params, 'rank')) for res in results] == [(8, 0), (8, 1)]
    assert [res.path for res in results] == [str(series[r].path(2)) for r in (0, 1)]
    assert meta_value(results[0].params, WORLD_KEY) == 2


def test_an_unreadable_agreed_file_on_one_rank_moves_every_rank_to_an_older_step(tmp_path):
    series = _rank_series(tmp_path, 2, [(1, 2), (1, 2)])
    series[1].path(2).write_bytes(series[1].path(2).read_bytes()[:-1])  # truncated outside the atomic writer
    results, logs = _ThreadRanks(2).run(lambda r: series[r])
    assert [res.global_step for res in results] == [4, 4]
    assert any('skipping' in line and 'm-2.ckpt' in line for line in logs[1])


def test_no_common_step_is_a_fresh_start_said_in_one_line(tmp_path):
    series = _rank_series(tmp_path, 2, [(2,), (1,)])  # keep 1: rank 0 pruned epoch 1 after saving epoch 2
    results, logs = _ThreadRanks(2).run(lambda r: series[r])
    assert results == [None, None]
    assert [line for line in logs[0] if 'no checkpoint of a common step' in line]


def test_a_checkpoint_of_another_rank_count_stops_every_rank(tmp_path):
    from common.cli import RecipeError
    series = _rank_series(tmp_path, 2, [(1,), ()], saved_world=1)  # a one-process run's checkpoint, 2 ranks now
    results, _ = _ThreadRanks(2).run(lambda r: series[r])
    assert all(isinstance(res, RecipeError) for res in results), results
    assert str(results[0]).startswith(f"{series[0].path(1)}: written by a 1-rank job, this job has 2")
    assert str(results[1]).startswith("rank 0's checkpoint of global step 4: written by a 1-rank job")


def test_one_process_resume_needs_no_collective(tmp_path):
    series = _rank_series(tmp_path, 1, [(1, 2)])
    res = agree_resume(series[0], lambda p: series[0]._order(p)[0] * 4, 1, log=lambda *a: None)
    assert res.global_step == 8 and res.path == str(series[0].path(2))
    with pytest.raises(Exception, match="written by a 1-rank job, this job has 2"):
        agree_resume(series[0], lambda p: 0, 2, gather=lambda row: np.asarray([row]), log=lambda *a: None)


@pytest.mark.parametrize('content, words', [(None, 'not found'), (b'', 'empty'),
                                            (b'\x00not a checkpoint' * 20, 'not a readable')])
def test_bad_checkpoint_files_are_one_line_naming_the_file(tmp_path, content, words):
    path = tmp_path / 'x.ckpt'
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        load_ckpt(path)
    assert str(path) in str(err.value) and words in str(err.value) and '\n' not in str(err.value)


def test_a_checkpoint_larger_than_free_memory_loads_when_the_page_cache_makes_room(tmp_path, monkeypatch):
    """MindSpore measures free pages (SC_AVPHYS_PAGES), which leave out the page cache: after a CI run's file
    traffic free memory was 249 MB of 24 GB and a 500 MB checkpoint was refused. Here free memory says 1 page and
    MemAvailable plenty: the checkpoint loads. With MemAvailable unknown, MindSpore's own figure still decides."""
    from common.ms import checkpoint as zoo_ckpt
    path = save_ckpt(tmp_path / 'a.ckpt', nn.Dense(64, 64))
    real_sysconf = os.sysconf
    monkeypatch.setattr(os, 'sysconf', lambda name: 1 if name == 'SC_AVPHYS_PAGES' else real_sysconf(name))
    assert os.path.getsize(path) > os.sysconf('SC_PAGE_SIZE')  # larger than the "free memory"
    assert load_ckpt(path)['weight'].shape == (64, 64)
    monkeypatch.setattr(zoo_ckpt, '_memory_available', lambda: None)
    with pytest.raises(CheckpointError, match='exceeds current available memory'):
        load_ckpt(path)


def test_load_into_names_the_mismatched_parameter(tmp_path):
    path = save_ckpt(tmp_path / 'a.ckpt', nn.Dense(4, 2), {'train_model': 'zfnet'})
    params = load_ckpt(path)
    assert meta_value(params, 'train_model') == 'zfnet'
    with pytest.raises(CheckpointError, match=r'does not fit dense 5 \(weight has shape \(2, 4\)'):
        load_into(nn.Dense(5, 2), params, path, 'dense 5')
    with pytest.raises(CheckpointError, match='missing parameters'):
        load_into(nn.SequentialCell([nn.Dense(4, 2), nn.Dense(2, 2)]), params, path)


def test_class_names_round_trip_through_a_checkpoint(tmp_path):
    names = ['n01440764', 'lost+found', 'ünïcode', 'with space']
    path = save_ckpt(tmp_path / 'a.ckpt', nn.Dense(4, 2), dict(classes_meta(names), train_model='zfnet'))
    params = load_ckpt(path)
    assert classes_of(params, path) == names
    load_into(nn.Dense(4, 2), params, path)  # the extra entry is no parameter of the network
    assert classes_of(load_ckpt(save_ckpt(tmp_path / 'b.ckpt', nn.Dense(4, 2))), path) is None  # an original's
    params['zoo_class_names'] = ms.Tensor(np.frombuffer(b'\xff not json', np.uint8))
    with pytest.raises(ImageFolderError, match=str(path)):
        classes_of(params, path)


def test_resume_is_refused_when_the_class_names_changed(tmp_path):
    names = ['cat', 'dog', 'emu']
    path = save_ckpt(tmp_path / 'a.ckpt', nn.Dense(4, 3), classes_meta(names))
    params = load_ckpt(path)
    check_resume_classes(params, path, list(names))  # the same names: accepted
    check_resume_classes(load_ckpt(save_ckpt(tmp_path / 'b.ckpt', nn.Dense(4, 3))), path, names)  # an original's
    with pytest.raises(CheckpointError, match=rf"^{path}: trained on other classes \(3 classes, the training data "
                                              r"now has 4\)"):
        check_resume_classes(params, path, names + ['fox'])
    with pytest.raises(CheckpointError, match=rf"^{path}: trained on other classes \(label 1 was 'dog', the "
                                              r"training data now has 'dingo'\)"):
        check_resume_classes(params, path, ['cat', 'dingo', 'emu'])


def test_cell_digest_is_the_common_digest_of_the_trainable_weights(tmp_path):
    net = nn.SequentialCell([nn.Dense(4, 3), nn.BatchNorm1d(3)])
    expected = weights_digest([p.asnumpy() for p in net.trainable_params()])
    assert cell_digest(net) == expected
    assert emit_initial_weights(tmp_path, net, rank=1) == expected
    assert events.last(tmp_path, 'initial_weights')['digest'] == expected


def test_no_framework_free_module_of_common_imports_common_ms():
    # common/ stays importable without MindSpore: only the MindSpore side imports common.ms
    for path in sorted((ROOT / 'common').glob('*.py')):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                module = '.' * node.level + (node.module or '')
                names = [module] + [f"{module.rstrip('.')}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            assert not any(n in ('common.ms', '.ms') or n.startswith(('common.ms.', '.ms.')) for n in names), path
