"""ci/kill_trials.py: kill-point choice, log parsing for each recipe, the table, and whole trials on a stand-in
trainer (stdlib, about a second per run) that resumes exactly, or is broken on purpose and must be caught."""
import random
import sys
from pathlib import Path

import pytest

import kill_trials as kt

HERE = Path(__file__).resolve().parent


def fake(*extra):
    return kt.Recipe(env="ci", folder="ci/tests", data=(), python=sys.executable, script=["fake_trainer.py"],
                     args=["--out={out}", "--epochs=3", "--steps=4", *extra], resume=["--resume=auto"],
                     steps_per_epoch=4, epochs=3, step_re=kt._EPOCH_STEP,
                     resume_re=r"resume: continuing from \S+ at epoch (?P<e>\d+)", ckpt_glob="ckpt/epoch_*.json",
                     ckpt_re=r"^epoch_(\d+)\.json$", ckpt_per_epoch=True, final="final.json", loader="json",
                     save_marker="epoch_")


def trials(tmp_path, recipe, n, **kw):
    opts = dict(p_save=0.5, p_second=0.5, seed=3) | kw
    return kt.run_recipe("fake", recipe, n, opts["seed"], tmp_path, opts["p_save"], opts["p_second"],
                         log=lambda *_: None)


def test_kill_points_fall_after_the_checkpoint_and_before_the_end():
    r = kt.RECIPES["tinydarknet_ms"]  # 4 steps per epoch, 4 epochs
    modes = set()
    for seed in range(300):
        after = random.Random(seed).choice([4, 8, 12])
        plan = kt.plan_kill(random.Random(seed), r, after, p_save=0.3)
        modes.add(plan["mode"])
        if plan["mode"] == "save":
            assert plan["step"] % 4 == 0 and after < plan["step"] <= 16
        else:
            assert after < plan["step"] < 16 and 0 <= plan["frac"] < 1
    assert modes == {"save", "step"}
    assert kt.plan_kill(random.Random(0), r, 16, p_save=0.3) is None  # nothing left to kill


@pytest.mark.parametrize("name, line, step", [
    ("cspnet_tf1", "Epoch: 001 Step/Batch: 000000005 --- Loss: 2.9301426 Training accuracy: 0.1875", 5),
    ("cutmix_tf2", "epoch 2 step 3 [11/24] loss 4.6767 lr 0.001 66.9 img/s ETA 01:38", 11),
    ("resnet50_cifar_pt", "2026-11-22 03:50:24,389 - mmcls - INFO - Epoch [2][2/2]\tlr: 1.000e-01, eta: 0:01:18", 4),
    ("sppnet_ms", "epoch 2 step 1 [4/12] loss 2.2990 lr 0.00933333 1.7 img/s ETA 00:12", 4),
    ("tinydarknet_ms", "epoch 2 step 3 [7/12] loss 2.4978 lr 0.1 40.2 img/s ETA 00:08", 7),
])
def test_each_recipes_step_line_gives_its_global_step(name, line, step):
    assert kt.RECIPES[name].global_step(line) == step
    assert kt.RECIPES[name].global_step("epoch: 2 step: 3, loss is 2.301762") is None  # epoch summaries are not steps


@pytest.mark.parametrize("name, text, step", [
    ("cspnet_tf1", "resume: restored /o/ckpt/step_000000006/cspdarknet53.ckpt (epoch 2, global step 6)", 6),
    ("cutmix_tf2", "resume: restored /o/checkpoints/epoch_0002 (epoch 2 done)", 16),
    ("resnet50_cifar_pt", "INFO - resumed from /o/epoch_2.pth: epoch 2, iter 4", 4),
    ("sppnet_ms", "resume: loaded /o/zfnet-3.ckpt (epoch 3, step 9)", 9),
    ("tinydarknet_ms", "resume: continuing from /o/checkpoints/0/x-2_4.ckpt at epoch 2", 8),
    ("sppnet_ms", "resume: no valid checkpoint in /o, starting from scratch", 0),
])
def test_each_recipes_resume_message_gives_the_step_it_resumed_at(name, text, step):
    assert kt.RECIPES[name].resumed_step(text) == step


def test_trials_on_a_trainer_that_resumes_exactly(tmp_path):
    res = trials(tmp_path, fake(), 4)
    s = res["summary"]
    assert s["trials"] == 4 and s["finished"] == 4 and s["not_killed"] == 0
    assert s["kills"] >= 5 and s["second_kills"] >= 1 and s["kills_during_save"] >= 1  # seed 3 plans all three
    assert s["resumed_from_newest"] == s["resumes"] == s["kills"]
    assert s["bit_exact"] == 4 and s["mismatches"] == 0 and s["lost_beyond_interval"] == 0
    assert 0 < s["max_redone"] <= 4 and s["runs_with_temps_left"] == 0
    table = kt.markdown([res])
    assert table.splitlines()[2].startswith(f"| fake | 4 | {s['kills']} ({s['second_kills']}) |")


def test_trials_catch_a_resume_that_diverges(tmp_path):
    s = trials(tmp_path, fake("--bug=diverge"), 2, p_second=0)["summary"]
    assert s["kills"] == 2 and s["finished"] == 2 and s["mismatches"] == 2 and s["bit_exact"] == 0


def test_trials_catch_a_save_that_deletes_the_old_checkpoint_first(tmp_path):
    res = trials(tmp_path, fake("--bug=delete_first"), 2, p_save=1.0, p_second=0)
    kills = [k for t in res["trials"] for k in t["kills"]]
    assert all(k["during_save"] for k in kills) and len(kills) == 2
    # the runs restart from scratch: everything before the interrupted save is redone
    assert res["summary"]["lost_beyond_interval"] == sum(k["last_step"] - 4 for k in kills) > 0
