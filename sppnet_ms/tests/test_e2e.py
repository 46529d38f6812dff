"""One run through test/train_performance_1p.sh on the digits data, then eval and export from its checkpoint.

The run is also the learning check: ZFNet at 56x56 (the smallest size the original layers allow is 53) on the
10 digits, 40 steps of batch 16, must reach top-1 >= LEARN_THRESHOLD on the 300 held-out images (chance 0.1).
It uses the opt-in He init, no dropout and no augmentation: the original N(0, 0.01) init needs thousands of
steps before the loss moves (the original's own ImageNet log sits at ln(1000) for its first epoch).
"""
import json
import struct
import sys

import numpy as np
import pytest

from common import contract, cputune
from common.banner import parse_banner

from conftest import RECIPE, digits_imagenet, error_lines, run

LEARN_FLAGS = ['--train_model=zfnet', '--image_size=56', '--init=he', '--keep_prob=1', '--augment=false',
               '--warmup_epochs=0', '--lr_init=0.01', '--vet_images=false']
# top-1 after these 40 steps, measured 2026-12-01 on an AMD EPYC (lscpu "AMD EPYC", AVX2, no AVX-512; 2 cores
# shared with the other suites) over --seed 1, 2, 3 and the default 44: 0.437, 0.543, 0.567, 0.627 (the test runs
# 44). The spread is wide (constant LR, the last step's weights, under half an epoch), so the old 0.5 had no
# margin (seed 1 fails it); 0.3 = 3x chance stays 0.137 under the lowest seed. 60 steps was tried: 0.687, 0.823,
# 0.447, 0.787, no better at the bottom. Not measured on an Intel AVX-512 host.
LEARN_THRESHOLD = 0.3
# the run took 110-300 s here with the 2 cores shared by five suites; the limit only catches a hang
PERF_TIMEOUT = 1200


@pytest.fixture(scope='session')
def perf_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('perf')
    proc = run(['bash', RECIPE / 'test' / 'train_performance_1p.sh', f'--data_path={digits_imagenet().parent}',
                f'--output_path={out}', '--batch_size=16', '--train_steps=40', '--device=cpu', *LEARN_FLAGS],
               timeout=PERF_TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-3000:]
    return out, proc.stdout


def test_performance_script_prints_banner_and_writes_records(perf_run):
    out, log = perf_run
    banner = parse_banner(log)
    assert banner['images_per_sec'] > 0 and banner['sec_per_step'] > 0 and banner['e2e_seconds'] > 0
    record = json.loads((out / 'ZFNet_bs16_1p_perf.json').read_text())
    assert record['steps'] == 40 and record['batch_size'] == 16 and record['device'] == 'cpu'
    assert record['num_classes'] == 10 and record['image_size'] == 56
    assert abs(record['images_per_sec'] - banner['images_per_sec']) < 0.01
    assert abs(record['accuracy'] - banner['accuracy']) < 1e-4
    case_log = (out / 'ZFNet_bs16_1p_perf.log').read_text()
    assert 'CaseName = ZFNet_bs16_1p_perf' in case_log and 'RankSize = 1' in case_log
    assert (out / 'train_0.log').read_text().count('Final result') == 1


def test_case_log_and_loss_file_in_the_modelzoo_form(perf_run):
    """common.contract.check_run (the same checks in all five recipes): the MindSpore original writes no case
    log, so the recipe declares the ResNet-50/CutMix form (train.CASE_LOG); the loss file holds the 40 steps'
    losses, the last one the same as the last "loss is" line."""
    import train
    out, log = perf_run
    got = contract.check_run(out, log, train.CASE_LOG, network='ZFNet', case='ZFNet_bs16_1p_perf', rank_size=1,
                             batch_size=16)
    said = [float(line.rsplit('loss is ', 1)[1].split()[0]) for line in log.splitlines() if 'loss is ' in line]
    assert said and got['losses'][-1] == pytest.approx(said[-1], abs=1e-5)


def test_the_performance_script_refuses_an_unknown_flag(tmp_path):
    proc = run(['bash', RECIPE / 'test' / 'train_performance_1p.sh', f'--data_path={digits_imagenet().parent}',
                f'--output_path={tmp_path / "out"}', '--no_such_flag=1'])
    contract.check_refused(proc.returncode, proc.stdout, '--no_such_flag', tmp_path / 'out')


def test_cpu_tuning_line_and_record(perf_run):
    out, log = perf_run
    cputune.assert_reported(log, json.loads((out / 'ZFNet_bs16_1p_perf.json').read_text()), ["onednn_isa"])


def test_learning_check_reaches_three_times_chance(perf_run):
    assert parse_banner(perf_run[1])['accuracy'] >= LEARN_THRESHOLD


def test_run_writes_summary_csv_and_real_png(perf_run):
    ckpt = perf_run[0] / 'ckpt'
    rows = (ckpt / 'summary.csv').read_text().splitlines()
    assert rows[0].startswith('epoch,train_loss,eval_top1') and rows[1].startswith('1,')
    png = (ckpt / 'curves.png').read_bytes()
    assert png[:8] == b'\x89PNG\r\n\x1a\n'
    width, height = struct.unpack('>II', png[16:24])
    assert (width, height) == (1000, 400)


def test_eval_from_best_checkpoint_reproduces_training_accuracy(perf_run, tmp_path):
    out, log = perf_run
    proc = run([sys.executable, RECIPE / 'eval.py', '--test_model=zfnet',
                f'--data_path={digits_imagenet()}', f'--ckpt_path={out / "ckpt" / "best.ckpt"}',
                '--device_target=CPU', '--batch_size=16', '--vet_images=false',
                f'--result_file={tmp_path / "eval.json"}'])
    assert proc.returncode == 0, proc.stdout[-2000:]
    res = json.loads((tmp_path / 'eval.json').read_text())
    assert res['images'] == 300
    assert abs(res['top_1_accuracy'] - parse_banner(log)['accuracy']) < 1e-4


def _digits_batch(n, size):
    """``n`` digits val images, one per class, through the recipe's evaluation transforms (NCHW float32)."""
    from src.dataset import create_dataset_imagenet, load_split
    samples, _ = load_split(digits_imagenet(), 'val', vet=False)
    picked = [next(s for s in samples if s[1] == label) for label in range(n)]
    images, _ = next(create_dataset_imagenet(picked, n, 'zfnet', False, size, workers=1)
                     .create_tuple_iterator(output_numpy=True))
    return images


@pytest.mark.parametrize('fmt', ['MINDIR', 'ONNX'])
def test_export_loads_back_and_matches_the_network(perf_run, tmp_path, fmt):
    """The exported file, run in its own runtime (MindSpore ``load`` + ``GraphCell`` / onnxruntime) on real digits
    images, gives the outputs of the network loaded from the same checkpoint here (not export.py's own check)."""
    import export
    import mindspore as ms
    from src.sppnet import SppNet
    ckpt = perf_run[0] / 'ckpt' / 'best.ckpt'
    name = tmp_path / 'zfnet'
    assert export.main([f'--ckpt_file={ckpt}', '--export_model=zfnet', f'--file_format={fmt}',
                        f'--file_name={name}', '--batch_size=2', '--device_target=CPU']) == 0
    exported = name.with_suffix('.' + fmt.lower())
    assert exported.stat().st_size > 1_000_000
    x = _digits_batch(2, 56)
    net = SppNet(10, 'test', True, 'zfnet', 56)
    assert not ms.load_param_into_net(net, ms.load_checkpoint(str(ckpt)))[0]  # every parameter loaded
    net.set_train(False)
    expected = net(ms.Tensor(x)).asnumpy()
    if fmt == 'MINDIR':
        got = ms.nn.GraphCell(ms.load(str(exported)))(ms.Tensor(x)).asnumpy()
    else:
        import onnxruntime as ort
        sess = ort.InferenceSession(str(exported), providers=['CPUExecutionProvider'])
        got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    # the same float32 weights on the same CPU: a runtime may fuse or reorder reductions, so the logits agree up to
    # float32 summation order. Measured here (AMD EPYC, AVX2) on logits of scale 4.05: MINDIR 0 (bit-identical),
    # ONNX 4.8e-7; the tolerance is 20x that. An untrained network (the exporter skipping the checkpoint) is off
    # by ~4 (mutation check).
    assert got.shape == expected.shape == (2, 10)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert (got.argmax(1) == expected.argmax(1)).all()
    assert np.abs(expected[0] - expected[1]).max() > 1e-2  # two digits, two different outputs: a real input


def test_eval_rejects_checkpoint_of_another_input_size(perf_run):
    ckpt = perf_run[0] / 'ckpt' / 'best.ckpt'
    proc = run([sys.executable, RECIPE / 'eval.py', '--test_model=zfnet', '--image_size=120',
                f'--data_path={digits_imagenet()}', f'--ckpt_path={ckpt}', '--device_target=CPU'])
    assert proc.returncode == 2
    errors = error_lines(proc.stdout)
    assert len(errors) == 1 and str(ckpt) in errors[0] and 'does not fit' in errors[0]
