"""Bad input ends with one 'ERROR: ...' line naming the file or flag, a non-zero exit and nothing half-written."""
import shutil
import sys

import pytest

from conftest import RECIPE, error_lines, run


def _one_error(proc, *needles):
    assert proc.returncode != 0, proc.stdout[-2000:]
    errors = error_lines(proc.stdout)
    assert len(errors) == 1, proc.stdout[-2000:]
    for needle in needles:
        assert str(needle) in errors[0]
    assert 'Traceback' not in proc.stdout


def test_missing_data_path(tmp_path):
    missing = tmp_path / 'nowhere'
    proc = run(['bash', RECIPE / 'test' / 'train_full_1p.sh', f'--data_path={missing}',
                f'--output_path={tmp_path / "out"}'])
    _one_error(proc, missing)


@pytest.mark.parametrize('flag', ['--batch_size=0', '--device=tpu', '--train_epochs=x'])
def test_nonsense_test_script_flags(tmp_path, flag):
    proc = run(['bash', RECIPE / 'test' / 'train_full_1p.sh', f'--data_path={tmp_path}', flag])
    _one_error(proc, flag.split('=')[0])


def test_truncated_jpeg_stops_training_before_it_starts(noise_imagenet, tmp_path):
    root = tmp_path / 'data'
    shutil.copytree(noise_imagenet, root)
    victim = sorted((root / 'train').rglob('*.JPEG'))[5]
    victim.write_bytes(victim.read_bytes()[:300])
    ckpt = tmp_path / 'ckpt'
    proc = run([sys.executable, RECIPE / 'train.py', '--train_model=zfnet', f'--train_path={root}',
                f'--eval_path={root}', f'--ckpt_path={ckpt}', '--image_size=56', '--batch_size=4',
                '--device_target=CPU'])
    _one_error(proc, victim, '--skip_bad_images')
    assert not ckpt.exists() or not any(ckpt.iterdir())


def test_a_broken_jpeg_header_is_named_by_the_reader_when_vetting_is_off(noise_imagenet, tmp_path):
    """Its Huffman table claims more codes than the segment holds: MindSpore's decoder dies of SIGSEGV on it (exit
    -11, not a line), so the reader checks the header first (common.imagefolder.encoded_problem)."""
    from common.testing import break_huffman_table
    root = tmp_path / 'data'
    shutil.copytree(noise_imagenet, root)
    victim = sorted((root / 'train').rglob('*.JPEG'))[5]
    victim.write_bytes(break_huffman_table(victim.read_bytes()))
    ckpt = tmp_path / 'ckpt'
    proc = run([sys.executable, RECIPE / 'train.py', '--train_model=zfnet', f'--train_path={root}',
                f'--eval_path={root}', f'--ckpt_path={ckpt}', '--image_size=56', '--batch_size=4',
                '--device_target=CPU', '--vet_images=false', '--epoch_size=1'])
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:])
    _one_error(proc, victim, 'corrupt JPEG header')
    assert not list(ckpt.rglob('*.ckpt'))


def test_corrupt_checkpoint_is_named(tmp_path, noise_imagenet):
    bad = tmp_path / 'best.ckpt'
    bad.write_bytes(b'\x00not a checkpoint' * 50)
    proc = run([sys.executable, RECIPE / 'eval.py', f'--ckpt_path={bad}', f'--data_path={noise_imagenet}',
                '--device_target=CPU'])
    _one_error(proc, bad)


def test_input_size_below_the_minimum_is_refused(noise_imagenet, tmp_path):
    proc = run([sys.executable, RECIPE / 'train.py', '--train_model=zfnet', f'--train_path={noise_imagenet}',
                f'--eval_path={noise_imagenet}', f'--ckpt_path={tmp_path}', '--image_size=40'])
    _one_error(proc, '--image_size 40', 'minimum 53')
