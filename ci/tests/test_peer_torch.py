"""ci/benchlib/peer_torch.py and the bench's plain PyTorch column.

The ci suite runs in .envs/ci, which has no framework: each count and step below runs in the environment that
owns it (a subprocess with that environment's python), so a peer's trainable parameter count is compared with
the count the recipe's own code gives, each framework counting its own model.
"""
import json
import os
import subprocess
from pathlib import Path

import pytest

import bench

ROOT = Path(__file__).resolve().parents[2]
MARK = "PEER_TEST_JSON:"
# each recipe's default model; for the two ImageNet recipes also 10 classes, the class folders of the bench's
# noise data, by which sppnet_ms's train.py sizes its head
CLASSES = {"cspnet_tf1": [10], "cutmix_tf2": [10], "resnet50_cifar_pt": [100], "sppnet_ms": [1000, 10],
           "tinydarknet_ms": [1000, 10]}
# the recipes' documented counts (their READMEs and model tests); both counts below must also equal these
DOCUMENTED = {"cspnet_tf1": 26_609_770, "cutmix_tf2": 273_066, "resnet50_cifar_pt": 23_705_252,
              "sppnet_ms": 62_357_608, "tinydarknet_ms": 1_043_104}

# recipe -> (environment, code that prints {classes: trainable parameters of the recipe's own model}); each
# counts the way the recipe's train.py fills its run record's "params"
RECIPE_COUNT = {
    "cspnet_tf1": ("tf", """
import numpy as np, tensorflow as tf
tf1 = tf.compat.v1
tf1.disable_eager_execution()
from models import cspdarknet53
def count(c):
    with tf.Graph().as_default():
        cspdarknet53.classifier(tf1.placeholder(tf.float32, [None, 32, 32, 3]), c)
        return sum(int(np.prod(v.shape)) for v in tf1.trainable_variables())
"""),
    "cutmix_tf2": ("tf", """
from src.model import count_params, resnet_v1
def count(c):
    return count_params(resnet_v1(num_classes=c))[0]
"""),
    "resnet50_cifar_pt": ("torch", """
from mmcv import Config
from mmcls.models import build_classifier
def count(c):
    cfg = Config.fromfile("configs/resnet/resnet50_8xb16_cifar100.py")
    cfg.model.head.num_classes = c
    return sum(p.numel() for p in build_classifier(cfg.model).parameters() if p.requires_grad)
"""),
    "sppnet_ms": ("mindspore", """
from src.sppnet import SppNet, count_params
def count(c):
    return count_params(SppNet(c, "train", True, "zfnet", 224))
"""),
    "tinydarknet_ms": ("mindspore", """
from src.tinydarknet import TinyDarkNet, count_params
def count(c):
    return count_params(TinyDarkNet(c))
"""),
}
PRINT_COUNTS = """
import json, sys
print("%s" + json.dumps({c: count(c) for c in json.loads(sys.argv[1])}))
""" % MARK


def run_in(env: str, code: str, *args, recipe: str = ""):
    """Run ``code`` with .envs/<env>'s python, from ``recipe``'s folder (its modules import as in its own entry
    points), and return the JSON it printed after MARK."""
    py = ROOT / ".envs" / env / "bin" / "python"
    if not py.exists():
        pytest.fail(f".envs/{env} is not built: run make setup")
    path = [str(ROOT / recipe)] if recipe else []
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join(path + [str(ROOT)]), "TF_USE_LEGACY_KERAS": "1",
               "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([str(py), "-c", code, *args], cwd=ROOT / recipe if recipe else ROOT, env=environ,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)]
    assert lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(lines[-1][len(MARK):])


@pytest.fixture(scope="module")
def peer_counts():
    code = """
import json
from ci.benchlib import peer_torch as pt
print("%s" + json.dumps({r: {c: pt.trainable_params(pt.build(r, c)) for c in cs} for r, cs in %r.items()}))
""" % (MARK, CLASSES)
    return run_in("torch", code)


@pytest.mark.parametrize("recipe", sorted(CLASSES))
def test_peer_has_the_recipe_models_trainable_parameter_count(recipe, peer_counts):
    env, code = RECIPE_COUNT[recipe]
    theirs = run_in(env, code + PRINT_COUNTS, json.dumps(CLASSES[recipe]), recipe=recipe)
    assert peer_counts[recipe] == theirs
    assert theirs[str(CLASSES[recipe][0])] == DOCUMENTED[recipe]


# ResNet-50's 0.1 is the recipe's rate for batches of 16 real images; on 4 noise images with PyTorch's default
# initialisation (mmcls zero-initialises each block's last BN) its first steps overshoot
TEST_LR = {"resnet50_cifar_pt": 1e-3}


def test_peer_training_steps_learn_a_repeated_batch_in_both_memory_formats():
    code = """
import json, math, torch
from ci.benchlib import peer_torch as pt
out = {}
for recipe in pt.PEERS:
    out[recipe] = {}
    for channels_last, steps in ((False, 3), (True, 1)):
        torch.manual_seed(0)
        x, y = pt.batch(recipe, 4, 10)
        step = pt.prepared(recipe, pt.build(recipe, 10), x, y, channels_last, %r.get(recipe))
        out[recipe]["channels_last" if channels_last else "contiguous"] = [float(step()) for _ in range(steps)]
print("%s" + json.dumps(out))
""" % (TEST_LR, MARK)
    losses = run_in("torch", code)
    assert sorted(losses) == sorted(CLASSES)
    for recipe, per_format in losses.items():
        first, *rest = per_format["contiguous"]
        assert rest[-1] < first, (recipe, per_format)
        # CSPDarknet53's batch-axis normalisation over 4 samples amplifies the two formats' rounding differences
        # (their float64 outputs agree to 1e-6), so the channels_last step must give a sane loss, not the same one
        assert all(0 < v < 50 for v in per_format["channels_last"]), (recipe, per_format)


def test_peer_module_emits_both_formats_and_the_faster_one():
    code = """
import runpy, sys
sys.argv = ["peer_torch", "cutmix_tf2", "--quick", "--batch_size", "4"]
runpy.run_module("ci.benchlib.peer_torch", run_name="__main__")
"""
    py = ROOT / ".envs" / "torch" / "bin" / "python"
    if not py.exists():
        pytest.fail(".envs/torch is not built: run make setup")
    proc = subprocess.run([str(py), "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_JSON:")][-1][len("BENCH_JSON:"):])
    assert res["batch_size"] == 4 and res["params"] == DOCUMENTED["cutmix_tf2"]
    forms = res["formats"]
    assert set(forms) == {"contiguous", "channels_last"}
    assert all(len(f["window_images_per_sec"]) == 3 and f["steps_per_window"] >= 1 for f in forms.values())
    best = max(forms, key=lambda f: forms[f]["images_per_sec"])
    assert res["best_format"] == best and res["peer"] == {"images_per_sec": forms[best]["images_per_sec"],
                                                          "format": best}
    assert res["flops_per_image_train"] > 0


# -- ci/bench.py: the column, its ratio and the rounds ---------------------------------------------------------
def peer_round(contiguous, channels_last, params=273_066):
    return {"command": "peer", "params": params, "peak_rss_mb": 300.0,
            "formats": {"contiguous": {"window_images_per_sec": contiguous, "warmup_seconds": 1.0},
                        "channels_last": {"window_images_per_sec": channels_last, "warmup_seconds": 2.0}}}


def test_bench_pools_each_memory_format_over_the_rounds_and_takes_the_faster():
    # channels_last wins round 1, contiguous round 2 by less: pooled, channels_last is faster
    runs = [peer_round([10.0, 11.0, 12.0], [20.0, 21.0, 22.0]), peer_round([30.0, 31.0, 32.0], [25.0, 26.0, 27.0])]
    res = bench.pool_peer(runs)
    assert res["rounds"] == 2 and res["best_format"] == "channels_last"
    assert res["formats"]["contiguous"]["images_per_sec"] == pytest.approx(21.0)
    assert res["formats"]["channels_last"]["images_per_sec"] == pytest.approx(23.5)
    assert res["peer"] == {"images_per_sec": pytest.approx(23.5), "format": "channels_last"}
    assert res["formats"]["channels_last"]["warmup_seconds"] == 2.0
    # a failed round is reported and the other round still counts
    res = bench.pool_peer([{"command": "peer", "error": "exit 1: boom"}, runs[1]])
    assert res["error"] == "exit 1: boom" and res["best_format"] == "contiguous"
    assert res["formats"]["contiguous"]["warmup_seconds"] == 1.0
    assert "peer" not in bench.pool_peer([{"error": "exit 1: boom"}])


def test_bench_table_has_the_plain_pytorch_column_and_ratio_after_the_existing_ones():
    recipe = {"images_per_sec": 95.0, "warmup_seconds": 3.0, "peak_rss_mb": 500.0, "params": 273_066}
    bare = {"batch_size": 32, "bare": {"images_per_sec": 100.0}, "pipeline": {"images_per_sec": 950.0},
            "flops_per_image_train": 2e9, "matmul_flops_per_sec": 400e9}
    peer = bench.pool_peer([peer_round([40.0, 50.0, 60.0], [70.0, 76.0, 80.0])])
    d = bench.derive(recipe, bare, peer)
    assert d["recipe_vs_plain_pytorch"] == pytest.approx(95 / 76) and d["recipe_vs_bare"] == pytest.approx(0.95)
    md = bench.markdown({"x": {"recipe": recipe, "bare": bare, "peer": peer, "derived": d}}, "now")
    head = [line for line in md.splitlines() if line.startswith("| recipe | batch |")][0]
    assert head.endswith("| peak RSS MB | plain PyTorch img/s | recipe / plain PyTorch | bf16 img/s | bf16 / fp32 |")
    row = [line for line in md.splitlines() if line.startswith("| x |")][0]
    assert row.endswith("| 95.0 | 100.0 | 95.0% | 950.0 | 10.0x | 2.000 | 400.0 | 47.5% | 3.0 | 500.0 | 76.0 | "
                        "125.0% | - | - |")  # no bf16 run in this result
    assert row.count("|") == head.count("|")
    assert "rounds (recipe run, then bare loop, then plain PyTorch peer): 1" in md
    line = [ln for ln in md.splitlines() if ln.startswith("- plain PyTorch peer command:")][0]
    assert "best format: channels_last" in line and "contiguous 50.0 img/s" in line and "channels_last 76.0" in line
    assert "trainable params 273,066; the recipe run's: the same" in line
    other = bench.peer_line(dict(peer, params=62_357_608), 58_301_578)
    assert "trainable params 62,357,608; the recipe run's: 58,301,578" in other


def test_bench_without_peer_figures_shows_dashes_and_old_results_still_render():
    # a failed peer: dashes, and the error in the section
    failed = bench.pool_peer([{"command": "peer", "error": "exit 1: boom"}])
    d = bench.derive({"images_per_sec": 9.0}, {}, failed)
    assert "recipe_vs_plain_pytorch" not in d
    md = bench.markdown({"y": {"recipe": {"images_per_sec": 9.0}, "bare": {}, "peer": failed, "derived": d}}, "now")
    assert [ln for ln in md.splitlines() if ln.startswith("| y |")][0].endswith("| - | - |")
    assert "- plain PyTorch peer error: exit 1: boom" in md
    # bench.json of a run before the peer existed (--merge keeps other recipes' results)
    md = bench.markdown({"z": {"recipe": {}, "bare": {}, "derived": {}}}, "now")
    assert [ln for ln in md.splitlines() if ln.startswith("| z |")][0].endswith("| - | - |")
    assert "rounds (recipe run, then bare loop): 1" in md
