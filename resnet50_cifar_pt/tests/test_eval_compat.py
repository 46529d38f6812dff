"""tools/test.py against checkpoints an mmcls 0.25 user already has, and tools/dist_test.sh against one process.

The reference network is built here from mmcls' own registry and a model dict written out in this file (mmcls
0.25's resnet50_8xb16_cifar100: ResNet_CIFAR depth 50, GAP, LinearClsHead 2048 -> 100), not from this recipe's
configs; its checkpoint is written by mmcv's own ``save_checkpoint`` (``meta`` + ``state_dict`` + ``optimizer``),
and the expected class scores come from that network run here on the digits test images, normalised with
mmcls' CIFAR-100 mean/std, read from the pickle without the recipe's loaders.
"""
from __future__ import annotations

import copy
import json
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import CONFIGS, RECIPE, entry, env, run

CONFIG = CONFIGS / "resnet50_8xb16_cifar100.py"
N_TEST = 45  # odd: two ranks get 23 each, one of them a padded repeat that the collection must drop
MEAN = np.array([129.304, 124.070, 112.434], np.float32)
STD = np.array([68.170, 65.392, 70.418], np.float32)
MMCLS_R50_CIFAR100 = dict(
    type="ImageClassifier",
    backbone=dict(type="ResNet_CIFAR", depth=50, num_stages=4, out_indices=(3,), style="pytorch"),
    neck=dict(type="GlobalAveragePooling"),
    head=dict(type="LinearClsHead", num_classes=100, in_channels=2048,
              loss=dict(type="CrossEntropyLoss", loss_weight=1.0)))
# a sample of mmcls 0.25's state_dict names and shapes for this network (stem, first and last bottleneck,
# downsample branch, BN buffers, head); the whole key set has 5 tensors per BN, 1 per conv, 2 for the head
MMCLS_KEYS = {
    "backbone.conv1.weight": (64, 3, 3, 3),
    "backbone.bn1.weight": (64,), "backbone.bn1.running_mean": (64,), "backbone.bn1.num_batches_tracked": (),
    "backbone.layer1.0.conv1.weight": (64, 64, 1, 1),
    "backbone.layer1.0.conv2.weight": (64, 64, 3, 3),
    "backbone.layer1.0.conv3.weight": (256, 64, 1, 1),
    "backbone.layer1.0.downsample.0.weight": (256, 64, 1, 1),
    "backbone.layer1.0.downsample.1.running_var": (256,),
    "backbone.layer2.0.conv2.weight": (128, 128, 3, 3),
    "backbone.layer3.5.bn3.weight": (1024,),
    "backbone.layer4.2.conv3.weight": (2048, 512, 1, 1),
    "backbone.layer4.2.bn3.running_var": (2048,),
    "head.fc.weight": (100, 2048), "head.fc.bias": (100,),
}
N_KEYS = 53 * 1 + 53 * 5 + 2  # 53 convs (49 + 4 downsample), 53 BNs, fc


def _digits(digits, split, n):
    """(n, 3, 32, 32) float32 images normalised as mmcls' CIFAR-100 config, and the labels, straight from the
    pickle (read with the repository's restricted unpickler only: the files are untrusted input)."""
    from common.safe_pickle import load
    d = load(digits / "cifar-100-python" / split)
    x = np.asarray(d["data"][:n], np.uint8).reshape(-1, 3, 32, 32).astype(np.float32)
    x = (x - MEAN[None, :, None, None]) / STD[None, :, None, None]
    return torch.from_numpy(x), np.asarray(d["fine_labels"][:n])


@pytest.fixture(scope="module")
def mmcls_net(digits, tmp_path_factory):
    """mmcls' network with every tensor informative: BN affine terms drawn at random (zero-init residual would
    leave each block's last BN, and with it most of the network, out of the output), running statistics of
    32 real training digits, a random head. Returns (model, checkpoint path, expected scores on N_TEST)."""
    from mmcls.models import build_classifier
    from mmcv.runner import save_checkpoint
    torch.manual_seed(20)
    model = build_classifier(MMCLS_R50_CIFAR100)
    model.init_weights()
    g = torch.Generator().manual_seed(20)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for m in bns:
            m.weight.uniform_(0.5, 1.0, generator=g)
            m.bias.normal_(0.0, 0.1, generator=g)
            m.reset_running_stats()
            m.momentum = None  # cumulative average: one batch gives its exact statistics
        model.head.fc.weight.normal_(0.0, 0.05, generator=g)
        model.head.fc.bias.normal_(0.0, 0.01, generator=g)
        model.train()
        model.extract_feat(_digits(digits, "train", 32)[0])
    for m in bns:
        m.momentum = 0.1
    model.eval()
    with torch.no_grad():
        expected = np.vstack(model(img=_digits(digits, "test", N_TEST)[0], return_loss=False))
    print(f"reference network: {len(set(expected.argmax(1)))} distinct labels, score spread "
          f"{expected.std(0).max():.3g}")
    assert expected.std(0).max() > 1e-3  # outputs that depend on the image (and so on the weights)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    ckpt = tmp_path_factory.mktemp("mmcls_ckpt") / "epoch_200.pth"
    from mmcls.datasets import CIFAR100
    save_checkpoint(model, str(ckpt), optimizer=opt, meta=dict(epoch=200, iter=625000, CLASSES=CIFAR100.CLASSES))
    return model, ckpt, expected


SCORE_ATOL = 5e-5


def test_a_tensor_left_unloaded_changes_the_scores_beyond_the_tolerance(mmcls_net, digits):
    """What the tolerance above must catch: the same network with one BatchNorm bias of the last block at its
    initial value (as a loader that skipped that key would leave it) scores the test digits differently."""
    model, _, expected = mmcls_net
    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken.backbone.layer4[2].bn3.bias.zero_()
        got = np.vstack(broken(img=_digits(digits, "test", N_TEST)[0], return_loss=False))
    print(f"one bias unloaded: max |difference| {np.abs(got - expected).max():.3g}")
    assert np.abs(got - expected).max() > 20 * SCORE_ATOL


def _test_argv(ckpt, digits, out, *extra):
    return [str(CONFIG), str(ckpt), "--data-path", str(digits), "--device", "cpu", "--out", str(out),
            "--cfg-options", "data.samples_per_gpu=8", f"data.test.max_samples={N_TEST}", *extra]


def test_mmcls_checkpoint_keys_are_mmcls_0_25s(mmcls_net):
    model, ckpt, _ = mmcls_net
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert set(saved) == {"meta", "state_dict", "optimizer"}  # mmcv's checkpoint layout
    sd = saved["state_dict"]
    assert len(sd) == N_KEYS
    for k, shape in MMCLS_KEYS.items():
        assert tuple(sd[k].shape) == shape, k


@pytest.mark.parametrize("prefix", ["", "module."])
def test_mmcls_checkpoint_evaluates_through_test_py_as_the_mmcls_network(mmcls_net, digits, tmp_path, prefix):
    """The same class scores as mmcls' own network, also from a DDP-trained file whose keys carry ``module.``
    (mmcv's loader strips it). atol 5e-5 on softmax probabilities: measured max |difference| 1.8e-7 on a 2-core
    AMD EPYC (AVX2) and 1.05e-5 on a 2-core Intel Xeon with AVX-512/AMX (its oneDNN kernels sum in another
    order in the two processes' setups); a checkpoint tensor left unloaded (one BatchNorm bias) moves them by
    far more (test_a_tensor_left_unloaded_changes_the_scores_beyond_the_tolerance)."""
    _, ckpt, expected = mmcls_net
    if prefix:
        saved = torch.load(ckpt, map_location="cpu", weights_only=True)
        saved["state_dict"] = {prefix + k: v for k, v in saved["state_dict"].items()}
        ckpt = tmp_path / "ddp_epoch_200.pth"
        torch.save(saved, ckpt)
    out = tmp_path / "results.json"
    assert entry("test")(_test_argv(ckpt, digits, out)) == 0
    got = json.loads(out.read_text())
    scores = np.asarray(got["class_scores"])
    assert scores.shape == (N_TEST, 100)
    print(f"max |test.py - mmcls| = {np.abs(scores - expected).max():.3g}")
    np.testing.assert_allclose(scores, expected, atol=SCORE_ATOL, rtol=0)
    assert got["pred_label"] == expected.argmax(1).tolist()
    from mmcls.datasets import CIFAR100
    assert got["pred_class"] == [CIFAR100.CLASSES[i] for i in expected.argmax(1)]  # names from the meta
    labels = _digits(digits, "test", N_TEST)[1]
    assert got["accuracy_top-1"] == pytest.approx(100.0 * np.mean(expected.argmax(1) == labels), abs=1e-3)


@pytest.mark.parametrize("damage", ["ten_classes", "one_key_dropped", "extra_key"])
def test_a_checkpoint_that_does_not_fit_the_config_is_refused_by_test_and_export(mmcls_net, digits, tmp_path, capsys,
                                                                                   damage):
    """mmcv loads with strict=False and only logs what did not fit: a 10-class checkpoint under the 100-class
    config ran a random head, a file short of one tensor ran with that tensor's initial value (it moves the scores,
    test above), and both reported an accuracy. Now: one ERROR line naming the file and the tensor, exit 2, no
    output written."""
    _, ckpt, _ = mmcls_net
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    sd = saved["state_dict"]
    key = {"ten_classes": "head.fc.weight", "one_key_dropped": "backbone.layer4.2.bn3.bias",
           "extra_key": "neck.fc.weight"}[damage]
    if damage == "ten_classes":
        sd["head.fc.weight"], sd["head.fc.bias"] = sd["head.fc.weight"][:10], sd["head.fc.bias"][:10]
    elif damage == "one_key_dropped":
        del sd[key]
    else:
        sd[key] = torch.zeros(3)
    bad = tmp_path / f"{damage}.pth"
    torch.save(saved, bad)
    what = {"ten_classes": "2 wrongly shaped", "one_key_dropped": "1 missing", "extra_key": "1 unexpected"}[damage]
    for tool, argv, out in (("test", _test_argv(bad, digits, tmp_path / "r.json"), tmp_path / "r.json"),
                            ("export", [str(CONFIG), str(bad), "--output-file", str(tmp_path / "m.onnx")],
                             tmp_path / "m.onnx")):
        capsys.readouterr()
        assert entry(tool)(argv) == 2, tool
        errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("ERROR")]
        assert len(errors) == 1 and str(bad) in errors[0] and what in errors[0] and key in errors[0], (tool, errors)
        assert not out.exists(), tool


def test_out_items_show_dir_and_work_dir(mmcls_net, digits, tmp_path, monkeypatch, capsys):
    _, ckpt, expected = mmcls_net
    out = tmp_path / "labels.pkl"
    shows = tmp_path / "shows"
    argv = _test_argv(ckpt, digits, out, "--out-items", "pred_label", "--show-dir", str(shows),
                      "--show-options", "fig_size=(2,2)", "--work-dir", str(tmp_path / "wd"))
    argv[argv.index(f"data.test.max_samples={N_TEST}")] = "data.test.max_samples=3"
    assert entry("test")(argv) == 0
    import pickle
    got = pickle.loads(out.read_bytes())  # written by this test's own run just above
    assert list(got["pred_label"]) == expected[:3].argmax(1).tolist() and "class_scores" not in got
    (metrics,) = (tmp_path / "wd").glob("eval_*.json")
    assert json.loads(metrics.read_text())["accuracy_top-1"] == got["accuracy_top-1"]
    assert sorted(p.name for p in shows.iterdir()) == ["00000.png", "00001.png", "00002.png"]
    from PIL import Image
    with Image.open(shows / "00000.png") as im:
        assert im.format == "PNG"
    # --show without a display: one line, status 2, nothing evaluated
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    capsys.readouterr()
    assert entry("test")(_test_argv(ckpt, digits, tmp_path / "x.json", "--show")) == 2
    err = capsys.readouterr().err
    assert "ERROR: --show needs a display" in err and not (tmp_path / "x.json").exists()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def one_process(mmcls_net, digits, tmp_path_factory):
    _, ckpt, _ = mmcls_net
    out = tmp_path_factory.mktemp("one") / "one.json"
    r = run([sys.executable, RECIPE / "tools" / "test.py", *_test_argv(ckpt, digits, out)], timeout=600)
    assert r.returncode == 0, r.stdout[-3000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("collect", ["tmpdir", "gpu-collect"])
def test_dist_test_on_two_cpu_processes_equals_one_process(mmcls_net, one_process, digits, tmp_path, collect):
    """tools/dist_test.sh CONFIG CHECKPOINT 2 (torchrun, gloo): rank 0's metrics and per-image results are the
    1-process run's, in dataset order, the sampler's padding dropped. 'tmpdir': mmcls' file collection in a new
    folder under ./.dist_test (run from tmp_path); 'gpu-collect': through the process group."""
    _, ckpt, _ = mmcls_net
    out = tmp_path / "two.json"
    extra = ["--gpu-collect"] if collect == "gpu-collect" else []
    cmd = ["bash", RECIPE / "tools" / "dist_test.sh", CONFIG, ckpt, "2", *_test_argv(ckpt, digits, out)[2:], *extra]
    e = dict(env(), PORT=str(_free_port()))
    r = subprocess.run([str(c) for c in cmd], cwd=tmp_path, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:]
    two = json.loads(out.read_text())
    assert r.stdout.count("accuracy_top-1 : ") == 1  # rank 0 reports, rank 1 does not
    for k in ("accuracy_top-1", "accuracy_top-5", "num_images", "pred_label", "pred_class"):
        assert two[k] == one_process[k], k
    # batches differ (8 consecutive images vs every other one) and torchrun runs 1 thread: measured 4.9e-6
    np.testing.assert_allclose(two["class_scores"], one_process["class_scores"], atol=2e-5, rtol=0)
    if collect == "tmpdir":
        assert (tmp_path / ".dist_test").is_dir() and not list((tmp_path / ".dist_test").iterdir())  # parts removed
