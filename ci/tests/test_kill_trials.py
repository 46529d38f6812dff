"""ci/kill_trials.py: kill-point choice, reading a run's events, the table, and whole trials on a stand-in
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
                     steps_per_epoch=4, epochs=3, ckpt_glob="ckpt/epoch_*.json", final="final.json",
                     loader="json", save_marker="epoch_")


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


def test_progress_comes_from_events_of_this_run_only(tmp_path):
    from common import events
    events.emit(tmp_path, "step", epoch=1, step=9, global_step=9, loss=1.0)  # an earlier run's
    tail = kt.EventTail(tmp_path)
    progress = kt.Progress(t0=0.0)
    events.emit(tmp_path, "resume", checkpoint="ckpt/epoch_0001.json", epoch=1, global_step=4)
    events.emit(tmp_path, "step", epoch=2, step=1, global_step=5, loss=1.0)
    with open(tmp_path / events.FILE, "a") as fh:
        fh.write('{"event": "step", "global_step": 6')  # being written when the kill came
    progress.add(tail.new())
    assert progress.last == 5 and progress.resumed == 4 and list(progress.seen) == [5]
    with open(tmp_path / events.FILE, "a") as fh:
        fh.write(', "epoch": 2, "step": 2, "time": 1.0}\n')
    progress.add(tail.new())
    assert progress.last == 6


def test_only_checkpoints_with_an_event_and_a_file_count(tmp_path):
    from common import events
    r = kt.Recipe(env="ci", folder=".", data=(), args=[], resume=[], steps_per_epoch=3, epochs=2,
                  ckpt_glob="ckpt/step_*", final="x", loader="tf")
    for step in (3, 6, 9):
        d = tmp_path / "ckpt" / f"step_{step:09d}"
        d.mkdir(parents=True)
        (d / "model.ckpt.index").write_text("x")
        if step != 9:  # the save of step 9 was killed before its event
            events.emit(tmp_path, "checkpoint", path=str(d / "model.ckpt"), epoch=step // 3, global_step=step)
    (tmp_path / "ckpt" / "step_000000003" / "model.ckpt.index").unlink()
    (tmp_path / "ckpt" / "step_000000003").rmdir()  # pruned
    assert r.checkpoints(tmp_path) == [6]


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


# --- --ranks 2: the stand-in 2-rank job (fake_job.py), one rank SIGKILLed, the job restarted with resume ---------
def fake_job(monkeypatch, *extra):
    monkeypatch.setitem(kt.RECIPES, "fake", fake())
    monkeypatch.setattr(kt, "GONE_GRACE", 3)
    return kt.Job(recipe="fake", data=(), script="fake_job.sh", argv=["--out={out}", "--epochs=3", "--steps=4", *extra],
                  resume=["--resume=auto"], events_dir="out", steps_per_epoch=4, epochs=3,
                  finals={r: [("json", f"rank_{r}/final.json")] for r in (0, 1)})


def rank_trials(tmp_path, job, n, seed=3):
    return kt.run_job_trials("fake", job, n, seed, tmp_path, log=lambda *_: None)


def test_rank_kill_points_fall_after_the_first_checkpoint_and_before_the_end():
    job = kt.JOBS["tinydarknet_ms"]  # 3 steps per epoch, 4 epochs
    plans = [kt.plan_rank_kill(random.Random(seed), job) for seed in range(200)]
    assert {p["rank"] for p in plans} == {0, 1}
    assert all(3 < p["step"] < 12 and 0 <= p["frac"] < 1 for p in plans)


def test_rank_trials_on_a_job_that_resumes_exactly(tmp_path, monkeypatch):
    res = rank_trials(tmp_path, fake_job(monkeypatch), 4)
    s = res["summary"]
    assert s["trials"] == s["finished"] == s["job_failed"] == 4 and s["killed_rank_0"] + s["killed_rank_1"] == 4
    assert s["killed_rank_0"] and s["killed_rank_1"]  # seed 3 draws both
    assert s["agreed"] == s["from_newest_common"] == s["bit_exact"] == 4
    assert s["failures"] == s["processes_left"] == s["runs_with_temps_left"] == 0
    for t in res["trials"]:
        assert t["newest_common"] >= 4 and set(t["resumed"].values()) == {t["newest_common"]}
        assert len(t["compare"]) == 2  # both ranks' files compared
    assert kt.markdown_ranks([res]).splitlines()[2].startswith(
        f"| fake | 4 | {s['killed_rank_0']} / {s['killed_rank_1']} | 4 |")


def test_resume_judged_accepts_a_finished_but_unlogged_save_and_nothing_older_or_later():
    def judge(resumed, newest=3, last=6):
        return kt.resume_judged({"resumed": resumed, "newest_common": newest, "last_step_before_kill": last})
    assert judge({0: 3, 1: 3}) == {"from_newest_common": True, "resumed_unlogged": False}
    # rank 0 renamed the step-6 checkpoint into place and was killed before logging it
    assert judge({0: 6, 1: 6}) == {"from_newest_common": True, "resumed_unlogged": True}
    assert not judge({0: 0, 1: 0})["from_newest_common"]  # an older checkpoint than every rank held
    assert not judge({0: 9, 1: 9})["from_newest_common"]  # later than any step run before the kill
    assert not judge({0: 3, 1: 6})["from_newest_common"]  # the ranks disagree


def test_rank_trials_catch_ranks_that_resume_different_steps(tmp_path, monkeypatch):
    s = rank_trials(tmp_path, fake_job(monkeypatch, "--bug=no_agree"), 1)["summary"]
    assert s["finished"] == 1 and s["agreed"] == 0 and s["failures"] == 1


def test_rank_trials_catch_a_rank_that_resumes_to_other_weights(tmp_path, monkeypatch):
    s = rank_trials(tmp_path, fake_job(monkeypatch, "--bug=diverge"), 1)["summary"]
    assert s["agreed"] == 1 and s["bit_exact"] == 0 and s["within_tolerance"] == 0 and s["failures"] == 1


def test_rank_trials_catch_a_process_left_behind(tmp_path, monkeypatch):
    s = rank_trials(tmp_path, fake_job(monkeypatch, "--bug=orphan"), 1)["summary"]
    assert s["processes_left"] == 1 and s["failures"] == 1
