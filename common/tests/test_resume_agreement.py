"""common.resume: the step every rank of a restarted job resumes from, and the refusal of another rank count;
common.testing's multi-rank kill helpers, against a real process tree."""
import subprocess
import sys
import textwrap

import pytest

from common import events
from common.cli import RecipeError
from common.resume import PAD, SLOTS, agree, check_world, pack, unpack
from common.testing import job_processes, kill_job, kill_rank_after_checkpoint, tag_job, wait_job_gone


def test_pack_keeps_the_newest_steps_in_a_fixed_shape():
    row = pack(range(40))
    assert len(row) == SLOTS and row[0] == 39 and row[-1] == 40 - SLOTS
    assert pack([5, 3]) == [5, 3] + [PAD] * (SLOTS - 2)
    assert unpack(pack([3, 5, 5])) == [5, 3]


def test_the_ranks_agree_on_the_newest_step_all_of_them_hold():
    # rank 1 was killed inside its epoch-3 save: its newest readable checkpoint is epoch 2's
    assert agree([[30, 20, 10], [20, 10]]) == 20
    assert agree([[30, 20], [30, 20]]) == 30
    assert agree([[], []]) is None


def test_no_common_step_means_a_fresh_start_said_in_one_line():
    said = []
    assert agree([[10], []], log=said.append) is None
    assert len(said) == 1 and "rank 0: 10; rank 1: none" in said[0] and "from scratch" in said[0]


def test_a_checkpoint_of_another_rank_count_is_refused_naming_the_file():
    check_world("ck.pt", 2, 2)
    check_world("ck.pt", None, 1)  # written before the rank count was recorded: nothing to compare
    with pytest.raises(RecipeError, match=r"^ck\.pt: written by a 2-rank job, this job has 1;"):
        check_world("ck.pt", 2, 1)


JOB = textwrap.dedent("""
    import os, subprocess, sys, time
    from common import events
    out, rank = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else None
    if rank is None:  # the launcher: two ranks, ends non-zero when one dies, stops the other (as ours do)
        ranks = [subprocess.Popen([sys.executable, __file__, out, str(r)]) for r in (0, 1)]
        while all(p.poll() is None for p in ranks):
            time.sleep(0.05)
        for p in ranks:
            p.kill()
        sys.exit(1 if any(p.wait() for p in ranks) else 0)
    os.environ["RANK_ID"] = str(rank)
    for step in range(1, 2000):
        if step % 5 == 0 and rank == 0:
            events.emit(out, "checkpoint", path=f"ck-{step}", epoch=step // 5, global_step=step)
        events.emit(out, "step", epoch=1, step=step, global_step=step, loss=1.0)
        time.sleep(0.02)
""")


def test_kill_helpers_kill_the_rank_past_a_checkpoint_and_see_the_job_gone(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(JOB)
    env = tag_job({"PYTHONPATH": str(events.Path(events.__file__).parent.parent), "PATH": "/usr/bin:/bin"})
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "out")], env=env)
    try:
        killed = kill_rank_after_checkpoint(proc, tmp_path / "out", rank=1, checkpoints=2, timeout=60)
        assert killed["rank"] == 1 and killed["global_step"] > 10
        saved = [e["global_step"] for e in events.read(tmp_path / "out", "checkpoint")]
        assert len(saved) >= 2 and killed["global_step"] > max(saved[:2])
        assert proc.wait(timeout=30) == 1
        wait_job_gone(env, grace=10)
    finally:
        kill_job(proc, env)
    assert not job_processes(env)


def test_wait_job_gone_fails_while_a_process_of_the_job_lives(tmp_path):
    env = tag_job({"PATH": "/usr/bin:/bin"})
    orphan = subprocess.Popen(["sleep", "60"], env=env)
    try:
        assert job_processes(env) == [orphan.pid]
        with pytest.raises(AssertionError, match="still running"):
            wait_job_gone(env, grace=0.5)
    finally:
        kill_job(orphan, env)


def test_make_test_runs_one_kill_case_per_recipe_and_the_variable_runs_all(monkeypatch):
    from common.testing import ALL_KILL_CASES, kill_cases
    monkeypatch.delenv(ALL_KILL_CASES, raising=False)
    assert kill_cases([1, 0], default=1) == [0] and kill_cases([(1, 1), (0, 2)], default=0) == [(1, 1)]
    monkeypatch.setenv(ALL_KILL_CASES, "1")
    assert kill_cases([1, 0], default=1) == [1, 0]
