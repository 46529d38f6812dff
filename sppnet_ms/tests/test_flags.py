"""The flags every recipe shares mean the same here: --train_steps caps the steps of an epoch, --perf marks a
performance run, -h prints usage and exits 0 (Python entries and test/*.sh alike)."""
import sys

import pytest

import train
from src.dataset import TrainData
from src.training import RunContext

from conftest import RECIPE, run


@pytest.mark.parametrize('flags, steps', [([], 10), (['--train_steps=3'], 3), (['--train_steps=50'], 10),
                                          (['--sink_size=15'], 15), (['--sink_size=15', '--train_steps=4'], 4)])
def test_train_steps_caps_the_epoch_and_sink_size_keeps_the_originals_meaning(noise_imagenet, flags, steps):
    # 40 noise images at batch 4: 10 steps per pass; --sink_size sets the epoch's steps (the original's
    # steps_per_epoch), --train_steps caps whatever the epoch would be
    args = train.parse_args([f'--train_path={noise_imagenet}', f'--eval_path={noise_imagenet}', '--batch_size=4',
                             '--vet_images=false', *flags])
    data = TrainData.from_args(args, RunContext('CPU', 'O0', False, None))
    assert data.steps_per_epoch == steps


def test_perf_marks_a_performance_run_and_performance_still_works_with_a_warning(capsys):
    assert train.parse_args(['--perf']).perf and not train.parse_args([]).perf
    assert train.parse_args(['--performance']).perf
    assert '--performance is deprecated' in capsys.readouterr().err


@pytest.mark.parametrize('entry', ['train.py', 'eval.py', 'export.py'])
def test_python_entries_print_usage_on_h(entry):
    proc = run([sys.executable, RECIPE / entry, '-h'], timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith('usage:')


@pytest.mark.parametrize('script', ['train_full_1p.sh', 'train_performance_1p.sh'])
def test_test_scripts_print_usage_on_h(script):
    proc = run(['bash', RECIPE / 'test' / script, '-h'], timeout=60)
    assert proc.returncode == 0 and '--train_steps' in proc.stdout


def test_train_steps_must_be_positive(tmp_path):
    proc = run([sys.executable, RECIPE / 'train.py', '--train_steps=0'], timeout=120)
    assert proc.returncode == 2 and '--train_steps' in proc.stdout
