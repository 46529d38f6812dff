"""The class map: evaluation folders are labelled by training's class names, never by their own folder list.

Traps: an empty class folder in train that sorts first (``aaa_empty/``) and a stray empty ``lost+found/``, and a
val folder that lacks a class (the first one, so numbering val by its own folders would shift every label).
A val folder under a name training never saw stops train.py and eval.py with one line naming it (exit 2).

The end-to-end check needs no learning: the reference run's epoch-1 checkpoint (conftest.uninterrupted, same seed)
is what a 1-epoch run on the trap folders trains too (asserted bit for bit), so the test knows its predictions in
advance. It files each digits image in the val folder of the class that checkpoint predicts, leaving the first
class out; labelled by name, training's and eval.py's top-1 on that folder is exactly 1, while any numbering of
val by its own folders labels every image below its predicted class (top-1 0).
"""
import json
import shutil
import sys
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest

import train
from common.imagefolder import CLASSES_KEY, ImageFolderError, decode_classes
from src.dataset import TrainData, class_names, create_dataset_imagenet, load_split
from src.training import RunContext

from conftest import RECIPE, RUN_TIMEOUT, ckpt_entries, digits_imagenet, error_lines, reference_cmd, run

# eval.main runs in this process after networks ran here: the device is chosen before any kernel runs, as
# eval.py chooses it (MindSpore refuses a set_device after its runtime started, unless it is the same)
ms.set_device('CPU', 0)

TRAPS = ('aaa_empty', 'lost+found')
UNKNOWN = 'n09999999'


def _link_classes(src, dest, skip=()):
    dest.mkdir(parents=True)
    for d in sorted(src.iterdir()):
        if d.name not in skip:
            (dest / d.name).symlink_to(d, target_is_directory=True)
    return dest


def _trap_train(noise_imagenet, root):
    """``root/train``: the noise run's class folders plus the two empty trap folders."""
    train_dir = _link_classes(noise_imagenet / 'train', root / 'train')
    for name in TRAPS:
        (train_dir / name).mkdir()
    return train_dir


def _names(noise_imagenet):
    return sorted(d.name for d in (noise_imagenet / 'train').iterdir())


def test_val_samples_are_labelled_by_training_class_names(noise_imagenet, tmp_path, capsys):
    # what train.py feeds its metric: TrainData's eval labels, from folders with every trap
    root = tmp_path / 'data'
    _trap_train(noise_imagenet, root)
    names = _names(noise_imagenet)
    val = _link_classes(noise_imagenet / 'val', root / 'val', skip=names[:1])
    (val / 'lost+found').mkdir()
    args = train.parse_args([f'--train_path={root}', f'--eval_path={root}', '--batch_size=4',
                             '--vet_images=false'])
    data = TrainData.from_args(args, RunContext('CPU', 'O0', False, None))
    assert data.classes == names and class_names(root, 'train') == names  # the model's head: 10 outputs
    for samples in (data.train_samples, data.eval_samples):
        assert [label for _, label in samples] == [names.index(Path(p).parent.name) for p, _ in samples]
    present = [d.name for d in sorted(val.iterdir()) if any(d.iterdir())]  # the noise val has empty classes too
    assert sorted({label for _, label in data.eval_samples}) == [names.index(n) for n in present]
    assert 0 not in {label for _, label in data.eval_samples}
    out = capsys.readouterr().out
    for trap in TRAPS:
        assert f"{root / 'train' / trap}: class folder holds no image" in out
    assert f"{val / 'lost+found'}: class folder holds no image" in out


def test_val_class_training_never_saw_is_named(noise_imagenet, tmp_path):
    root = tmp_path / 'data'
    _trap_train(noise_imagenet, root)
    val = _link_classes(noise_imagenet / 'val', root / 'val')
    (val / UNKNOWN).symlink_to(noise_imagenet / 'val' / 'n09000003', target_is_directory=True)
    with pytest.raises(ImageFolderError, match=str(val / UNKNOWN)):
        load_split(root, 'val', vet=False, classes=_names(noise_imagenet))
    proc = run(reference_cmd(root, tmp_path / 'ckpt'), timeout=RUN_TIMEOUT)
    assert proc.returncode == 2, proc.stdout[-2000:]
    errors = error_lines(proc.stdout)
    assert len(errors) == 1 and str(val / UNKNOWN) in errors[0], proc.stdout[-2000:]
    assert not list((tmp_path / 'ckpt').glob('*.ckpt'))


def _predictions(ckpt, samples):
    """(predicted class, gap between its logit and the runner-up's) per sample, from the checkpoint's weights."""
    from src.sppnet import SppNet
    net = SppNet(10, 'test', True, 'zfnet', 56)
    assert not ms.load_param_into_net(net, ms.load_checkpoint(str(ckpt)))[0]
    net.set_train(False)
    out = []
    for images, _ in create_dataset_imagenet(samples, 8, 'zfnet', False, 56, workers=1).create_tuple_iterator(
            output_numpy=True):
        logits = net(ms.Tensor(images)).asnumpy()
        top2 = np.sort(logits, axis=1)[:, -2:]
        out += list(zip(logits.argmax(1), top2[:, 1] - top2[:, 0]))
    return out


@pytest.fixture(scope='module')
def relabelled(uninterrupted, noise_imagenet, tmp_path_factory):
    """A 1-epoch run on the trap train folders, evaluated on a val folder filed by predicted class (first class
    left out). Returns (data root, its ckpt folder, its output, the number of val images)."""
    root = tmp_path_factory.mktemp('classmap')
    _trap_train(noise_imagenet, root)
    names = _names(noise_imagenet)
    pool, _ = load_split(digits_imagenet(), 'val', vet=False)
    pool = [s for s in pool if int(Path(s[0]).stem.split('_')[1]) % 5 == 0]  # ~60 images of every digit
    placed = 0
    for (path, _), (cls, gap) in zip(pool, _predictions(uninterrupted / 'zfnet-1.ckpt', pool)):
        # class 0 stays out of val; a near-tie (float32 order could flip it between runtimes) is not used
        if cls == 0 or gap < 1e-3:
            continue
        (root / 'val' / names[cls]).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, root / 'val' / names[cls])
        placed += 1
    assert placed >= 10 and not (root / 'val' / names[0]).exists()
    ckpt = root / 'ckpt'
    proc = run(reference_cmd(root, ckpt, '--epoch_size=1', '--run_eval=true'), timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-3000:]
    return root, ckpt, proc.stdout, placed


def test_training_evaluates_with_training_labels(relabelled, uninterrupted, noise_imagenet):
    root, ckpt, out, placed = relabelled
    # the premise: empty folders change nothing in training, so the weights evaluated are the reference's
    mine, reference = ckpt_entries(ckpt / 'zfnet-1.ckpt'), ckpt_entries(uninterrupted / 'zfnet-1.ckpt')
    for name in [n for n in reference if isinstance(reference[n], np.ndarray) and not n.startswith('best_')]:
        assert np.array_equal(mine[name], reference[name]), name
    assert decode_classes(mine[CLASSES_KEY]) == _names(noise_imagenet)
    for trap in TRAPS:
        assert f"{root / 'train' / trap}: class folder holds no image" in out
    record = json.loads((ckpt / 'ZFNet_bs4_1p_acc.json').read_text())
    assert record['num_classes'] == 10
    assert record['last_eval']['top_1_accuracy'] == 1.0, (record['last_eval'], placed)


def test_eval_labels_by_the_checkpoint_class_names_or_says_it_cannot(relabelled, tmp_path, capsys):
    import eval as evaluate  # the recipe's eval.py, in this process (no second MindSpore start-up)
    root, ckpt, _, placed = relabelled
    best = ckpt / 'best.ckpt'
    result = tmp_path / 'eval.json'

    def _eval(path):
        assert evaluate.main([f'--ckpt_path={path}', '--test_model=zfnet', f'--data_path={root}', '--batch_size=8',
                              '--device_target=CPU', f'--result_file={result}']) == 0
        return json.loads(result.read_text()), capsys.readouterr().out

    res, out = _eval(best)
    assert res['images'] == placed and res['top_1_accuracy'] == 1.0
    assert 'carries no class names' not in out
    # an original checkpoint (no class names): the folder's own order, said once; here that shifts every label
    params = ms.load_checkpoint(str(best))
    assert CLASSES_KEY in params
    bare = tmp_path / 'original.ckpt'
    ms.save_checkpoint([{'name': k, 'data': v} for k, v in params.items() if k != CLASSES_KEY and
                        not isinstance(v, str)], str(bare),
                       append_dict={k: v for k, v in params.items() if isinstance(v, str)})
    res, out = _eval(bare)
    said = [line for line in out.splitlines() if 'carries no class names' in line]
    assert len(said) == 1 and str(bare) in said[0]
    assert res['images'] == placed and res['top_1_accuracy'] == 0.0


def test_eval_stops_at_a_val_class_training_never_saw(relabelled, noise_imagenet, tmp_path):
    root, ckpt, _, _ = relabelled
    val = tmp_path / 'val'
    shutil.copytree(root / 'val', val)
    shutil.copytree(noise_imagenet / 'val' / 'n09000003', val / UNKNOWN)
    proc = run([sys.executable, RECIPE / 'eval.py', f'--ckpt_path={ckpt / "best.ckpt"}', '--test_model=zfnet',
                f'--data_path={val}', '--device_target=CPU'], timeout=RUN_TIMEOUT)
    assert proc.returncode == 2, proc.stdout[-2000:]
    errors = error_lines(proc.stdout)
    assert len(errors) == 1 and str(val / UNKNOWN) in errors[0]
