"""Val images are labelled through the class names of training, not by the val folder's own list.

Folders like a real ImageNet copy can have: an empty class folder and a stray ``lost+found`` in train, a class
missing from val. Numbered per split, the missing class would shift every later val label by one and training
and evaluation would run to the end with a wrong top-1."""
import json
import os
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import mindspore as ms

from common.ms import load_ckpt, load_into
from common.ms.checkpoint import classes_of
from conftest import SMALL, python

MISSING = "n09000000"  # the first class: numbered by its own folders, val would shift every label by one


def _names(digits):
    return sorted(p.name for p in (digits / "train").iterdir())


def _folders(digits, root, per_class=2, val_extra=None):
    """train: ``per_class`` images of every digit class + an empty ``aaa_empty`` and ``lost+found``; val: every
    digits val image except class MISSING's (plus a non-empty folder ``val_extra`` if given)."""
    (root / "val").mkdir(parents=True)
    for cls in _names(digits):
        (root / "train" / cls).mkdir(parents=True)
        for img in sorted((digits / "train" / cls).iterdir())[:per_class]:
            (root / "train" / cls / img.name).symlink_to(img)
        if cls != MISSING:
            (root / "val" / cls).symlink_to(digits / "val" / cls)
    (root / "train" / "aaa_empty").mkdir()
    (root / "train" / "lost+found").mkdir()
    if val_extra:
        shutil.copytree(digits / "val" / MISSING, root / "val" / val_extra)
    return root


def _ckpt(out):
    (path,) = (out / "checkpoints" / "0").glob("train_tinydarknet_imagenet-*.ckpt")
    return path


def _top1_by_name(ckpt, val_root, names):
    """Top-1 of ``ckpt``'s weights on every image under ``val_root``, each labelled by its folder's index in
    ``names`` (the right labels), and what it would be with the labels shifted as per-split numbering shifts
    them (the folder's index in val's own sorted folder list)."""
    from src.dataset import create_dataset_imagenet, load_samples
    from src.tinydarknet import TinyDarkNet
    net = TinyDarkNet(len(names))
    load_into(net, load_ckpt(ckpt), ckpt)
    net.set_train(False)
    samples, own = load_samples(val_root, check=False)  # own numbering: labels only used for the shifted figure
    data = create_dataset_imagenet(samples, False, 64, 32, num_parallel_workers=1)
    pred = np.concatenate([net(img).asnumpy().argmax(1) for img, _ in data.create_tuple_iterator(num_epochs=1)])
    right = np.array([names.index(os.path.basename(os.path.dirname(p))) for p, _ in samples])
    shifted = np.array([label for _, label in samples])
    return float((pred == right).mean()), float((pred == shifted).mean()), len(samples)


def test_create_data_labels_val_by_the_training_class_names(digits, tmp_path):
    """create_data's val labels, checked directly: each image's label is its folder's index among training's
    classes; the empty train folders are reported and not numbered."""
    import train
    root = _folders(digits, tmp_path)
    args = train.parse_args([f"--data_path={root}", "--batch_size=16", *SMALL])
    lines = []
    data = train.create_data(args, SimpleNamespace(group_size=1, rank=0, log=lines.append))
    names = _names(digits)
    assert data.classes == names
    assert {os.path.basename(os.path.dirname(p)) for p, _ in data.val} == set(names) - {MISSING}
    for path, label in data.val:
        assert label == names.index(os.path.basename(os.path.dirname(path))), path
    for empty in ("aaa_empty", "lost+found"):
        assert any(str(root / "train" / empty) in line and "no image" in line for line in lines), lines


def test_training_and_eval_top1_use_the_training_labels(digits, learn_run, tmp_path):
    """train.py (1 step at lr 1e-6 from the learning run's checkpoint, so its predictions mean something) on
    those folders: its closing val top-1 and eval.py's top-1 with the checkpoint it saved both equal the top-1
    computed here from that checkpoint's weights with each image labelled by folder name; the checkpoint carries
    training's class names. The same predictions scored with per-split labels differ by far more than the
    tolerance, so a shifted labelling cannot pass."""
    root = _folders(digits, tmp_path / "data")
    out = tmp_path / "out"
    learned = _ckpt(learn_run[0])
    proc = python("train.py", f"--data_path={root}", f"--output_path={out}", "--batch_size=16", "--train_steps=1",
                  "--epoch_size=1", "--lr_init=0.000001", "--pre_trained=True", f"--checkpoint_path={learned}",
                  "--device_target=CPU", *SMALL)
    for empty in ("aaa_empty", "lost+found"):
        assert f"{root / 'train' / empty}: class folder holds no image" in proc.stdout
    ckpt = _ckpt(out)
    names = _names(digits)
    assert classes_of(load_ckpt(ckpt), ckpt) == names
    right, shifted, n = _top1_by_name(ckpt, root / "val", names)
    assert right > 0.5 and abs(right - shifted) > 0.3, (right, shifted)  # the check below can tell them apart
    rec = json.loads((out / "TinyDarknet_for_MindSpore_bs16_1p_acc.json").read_text())
    assert rec["accuracy"] == pytest.approx(right, abs=0.5 / n)  # the same images judged right, to one image
    evaluated = python("eval.py", f"--data_path={root}", f"--checkpoint_path={ckpt}", "--batch_size=32",
                       "--device_target=CPU", *SMALL)
    acc = json.loads(evaluated.stdout.split("result:", 1)[1].strip().splitlines()[0])
    assert acc["top_1_accuracy"] == pytest.approx(right, abs=0.5 / n)
    assert "no class names in this checkpoint" not in evaluated.stdout


def test_eval_of_a_checkpoint_without_class_names_falls_back_with_one_line(digits, learn_run, tmp_path):
    """An original MindSpore checkpoint holds no class names: eval.py numbers the val folders by their own
    sorted names (right when val has every class: the learning run's top-1 again) and says so once."""
    learned = _ckpt(learn_run[0])
    params = {k: v for k, v in load_ckpt(learned).items() if k != "zoo_class_names"}
    plain = tmp_path / "plain.ckpt"
    ms.save_checkpoint([{"name": k, "data": v} for k, v in params.items()], str(plain))
    assert classes_of(load_ckpt(plain), plain) is None
    proc = python("eval.py", f"--data_path={digits}", f"--checkpoint_path={plain}", "--batch_size=64",
                  "--device_target=CPU", *SMALL)
    assert sum("no class names in this checkpoint" in line for line in proc.stdout.splitlines()) == 1
    acc = json.loads(proc.stdout.split("result:", 1)[1].strip().splitlines()[0])
    trained = json.loads((learn_run[0] / "TinyDarknet_for_MindSpore_bs16_1p_acc.json").read_text())["accuracy"]
    assert acc["top_1_accuracy"] == pytest.approx(trained, abs=1e-4)


def test_val_class_training_never_saw_stops_train_and_eval(digits, learn_run, tmp_path):
    """A non-empty val folder under a name training never saw: exit 2 and one ERROR line naming it, from
    train.py (before any step) and from eval.py."""
    root = _folders(digits, tmp_path / "data", val_extra="n09999999")
    stray = root / "val" / "n09999999"
    # one short epoch: were the folder accepted, the run would end soon instead of training 500 epochs
    for script, extra in (("train.py", [f"--output_path={tmp_path / 'out'}", "--batch_size=16", "--epoch_size=1",
                                        "--train_steps=1"]),
                          ("eval.py", [f"--checkpoint_path={_ckpt(learn_run[0])}"])):
        proc = python(script, f"--data_path={root}", "--device_target=CPU", *extra, *SMALL, check=False)
        errors = [line for line in proc.stdout.splitlines() if line.startswith("ERROR")]
        assert proc.returncode == 2 and len(errors) == 1, proc.stdout[-2000:]
        assert str(stray) in errors[0] and "not among the 10 classes" in errors[0], errors[0]
        assert "Traceback" not in proc.stdout
    assert not list((tmp_path / "out").rglob("*.ckpt"))
