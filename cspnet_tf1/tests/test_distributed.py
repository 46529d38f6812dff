"""Two CPU ranks through test/train_performance_8p.sh (TF1 graph mode, MultiWorkerMirroredStrategy collectives).

The 2-rank run resumes the session's 1-process checkpoint (conftest ``trained``, global step 6) for one step
at 8 images per rank, so its update can be recomputed here: the network normalises over the batch it is
given, so a 2-rank step is not a 1-process step on the 16 images together but the mean of the gradients of
the two 8-image half-batches, which a single process computes below from the same checkpoint.
"""
import functools
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

import train
import utils
from common import events
from common.banner import parse_banner
from common.testing import (free_port, kill_cases, kill_job, kill_rank_after_checkpoint, rank_table, tag_job, wait_job_gone,
                            write_rank_table)
from conftest import RECIPE, env

tf1 = tf.compat.v1
CASE = "CSPNet_ID0840_for_TensorFlow_bs8_2p_perf"
TABLE = rank_table(2)
SCRIPT = RECIPE / "test" / "train_performance_8p.sh"
_free_port = functools.partial(free_port, consecutive=2)  # rank r listens on port + r


def _table(tmp_path, table, name="rank_table.json"):
    """A damaged table (a dict or raw text) as a file."""
    path = tmp_path / name
    path.write_text(table if isinstance(table, str) else json.dumps(table))
    return path


def _launch(tmp_path, noise, table, *extra, out="out", port=None):
    return ["bash", str(SCRIPT), f"--data_path={noise}", f"--rank_table={table}", f"--output_path={tmp_path / out}",
            "--device=cpu", f"--port={port or _free_port()}", "--batch_size=8", *extra]


def _field(pattern, text):
    return re.search(pattern, text).group(1)


def _rank_variables(out, rank):
    """Every tensor rank ``rank`` saved of its own session at the end (--rank_checkpoints)."""
    reader = tf.train.load_checkpoint(str(out / f"rank_{rank}" / "final" / "cspdarknet53.ckpt"))
    return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()}


def _assert_identical(a, b, global_step):
    """The same variables, bit for bit: 146 weights and biases, their Momentum slots, the global step."""
    assert a.keys() == b.keys() and len(a) == 2 * 146 + 1 and sum(n.endswith("/Momentum") for n in a) == 146
    assert a["Variable"] == b["Variable"] == global_step
    different = [n for n in a if not np.array_equal(a[n], b[n])]
    assert not different, f"{len(different)} of {len(a)} variables differ between the ranks, e.g. {different[:5]}"


def _by_rank(out, kind):
    found = {}
    for event in events.read(out, kind):
        found.setdefault(event["rank"], []).append(event)
    return found


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory, noise, trained):
    """One step (global step 7) of 2 ranks x 8 images, resumed from the 1-process run's step-6 weights.

    The Saver files of that checkpoint without its state.json (a checkpoint from elsewhere carries no rank
    count): the step folder itself, written by 1 process, is refused by 2 ranks (test below).

    --train_steps=1: one step per epoch, so global step 6 is 6 epochs done and epoch 7 is the one step 7, on
    the first batch of the shard (no --reshuffle: every epoch has the same batches)."""
    tmp = tmp_path_factory.mktemp("dist")
    start = _bare_copy(trained[0] / "ckpt" / "step_000000006", tmp / "start")
    table = write_rank_table(tmp / "rank_table.json", 2)
    proc = subprocess.run(_launch(tmp, noise, table, "--train_epochs=7", "--train_steps=1", "--seed=3",
                                  "--DISPLAY_STEP=1", f"--resume={start}", "--rank_checkpoints"),
                          cwd="/", env=env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    logs = [(tmp / "out" / f"rank_{r}" / "train.log").read_text() for r in (0, 1)]
    return tmp / "out", proc.stdout, logs, start


def _bare_copy(folder, to):
    """The Saver files of a step folder, hard-linked into ``to`` without its state.json."""
    to.mkdir(parents=True)
    for f in folder.glob("cspdarknet53.ckpt.*"):
        os.link(f, to / f.name)
    return to


def test_two_ranks_keep_identical_weights_on_different_shards(two_ranks):
    out, stdout, logs, start = two_ranks
    shards = [_field(r"shard sha256 (\w+)", log) for log in logs]
    weights = [_field(r"final weights sha256 (\w+)", log) for log in logs]
    assert shards[0] != shards[1] and weights[0] == weights[1]
    # not the digests the ranks print about themselves: the variables each rank saved of its own session
    final = [_rank_variables(out, r) for r in (0, 1)]
    _assert_identical(final[0], final[1], global_step=7)
    # rank 0's copy is what its checkpoint of step 7 holds, and step 7 changed the weights
    saved = tf.train.load_checkpoint(str(out / "ckpt" / "step_000000007" / "cspdarknet53.ckpt"))
    assert all(np.array_equal(saved.get_tensor(n), v) for n, v in final[0].items())
    before = tf.train.load_checkpoint(str(start / "cspdarknet53.ckpt"))
    assert not np.array_equal(before.get_tensor("stage6/wfc"), final[1]["stage6/wfc"])
    # both resumed rank 0's checkpoint (rank 1 through the all-reduce) with its seed, and ran step 7 only
    resumed = _by_rank(out, "resume")
    assert [e["checkpoint"] for e in resumed[0]] == [str(start / "cspdarknet53.ckpt")]
    assert [(e["checkpoint"], e["from_rank"], e["global_step"]) for e in resumed[1]] == [(None, 0, 6)]
    steps = _by_rank(out, "step")
    assert sorted(steps) == [0, 1] and all([e["global_step"] for e in steps[r]] == [7] for r in (0, 1))
    initial = _by_rank(out, "initial_weights")
    assert len(initial[0]) == len(initial[1]) == 1 and initial[0][0]["digest"] == initial[1][0]["digest"]
    # rank 0 alone prints the banner, writes the records and the checkpoint
    assert stdout.count("Final result") == 1 and "Final result" not in logs[1]
    banner = parse_banner(stdout)
    record = json.loads((out / f"{CASE}.json").read_text())
    assert record["rank_size"] == 2 and record["global_batch_size"] == 16 and record["steps"] == 1
    assert record["all_reduce"] == "tf-collective" and record["seed"] == 3
    assert banner["images_per_sec"] > 0
    assert banner["images_per_sec"] == pytest.approx(record["images_per_sec"], rel=1e-2)
    log = dict(line.split(" = ", 1) for line in (out / f"{CASE}.log").read_text().splitlines())
    assert log["RankSize"] == "2" and log["BatchSize"] == "16"
    assert json.loads((out / "ckpt" / "step_000000007" / "state.json").read_text())["rank_size"] == 2
    assert len(list(out.glob("*.json"))) == 1 and not list((out / "rank_1").glob("*.ckpt*"))
    assert not (out / "rank_1" / "ckpt").exists()  # rank 1 wrote its final copy only


def _half_batches(noise, seed=3, batch=8, world=2):
    """Rank r's images of global step 7 (epoch 2, first batch): train.py's shard and batch order."""
    x, y, _, _ = utils.load_cifar(noise)
    n = len(x) // world
    first = utils.random_batch(n, batch, np.random.RandomState(seed))[0]
    return [(x[r::world][:n][first].astype(np.float32), y[r::world][:n][first]) for r in range(world)]


def test_two_rank_step_is_the_mean_of_the_half_batch_gradients(two_ranks, noise):
    out, _, _, start = two_ranks
    # the formulations the run chose (auto: probed on this host), so that the same kernels run here
    choices = json.loads((out / f"{CASE}.json").read_text())["cpu_tuning"]["choices"]
    impl = {name: choices[name]["choice"] for name in ("conv_impl", "bn_impl")}
    args = train.parse_args(["--device=cpu", *(f"--{name}={value}" for name, value in impl.items())])
    ctx = train.Context(device="cpu", amp=False, cluster=train.dist.Cluster(), out=out, found=None, seed=3, **impl)
    graph = tf.Graph()
    with graph.as_default():
        g = train.build_graph(train.create_model(args, ctx), train.create_loss(args), train.create_optimizer(args, ctx))
        grads, weights = zip(*g["grads"])
        with tf1.Session(graph=graph) as sess:
            tf1.train.Saver().restore(sess, str(start / "cspdarknet53.ckpt"))
            w0 = sess.run(weights)
            half = [sess.run(grads, {g["x"]: x, g["y"]: y}) for x, y in _half_batches(noise)]
    before, after = tf.train.load_checkpoint(str(start / "cspdarknet53.ckpt")), \
        tf.train.load_checkpoint(str(out / "cspdarknet53.ckpt"))
    names = [v.op.name for v in weights]
    got = [after.get_tensor(n) for n in names]

    def momentum_step(grad_sets):  # tf.train.MomentumOptimizer: accum = 0.9 accum + g; w -= lr accum
        mean = [np.mean(gs, axis=0) for gs in zip(*grad_sets)]
        return [w - 1e-3 * (0.9 * before.get_tensor(n + "/Momentum") + gm) for w, n, gm in zip(w0, names, mean)]

    def rel_err(want):
        num = np.sqrt(sum(np.sum((a.astype(np.float64) - b) ** 2) for a, b in zip(got, want)))
        return num / np.sqrt(sum(np.sum((b.astype(np.float64) - w) ** 2) for b, w in zip(want, w0)))

    # same kernels (oneDNN, see conftest) and the same arithmetic: equal up to float32 rounding (measured: 0.0)
    assert rel_err(momentum_step(half)) < 1e-5
    # the check can tell: rank 0's half-batch alone, or the sum instead of the mean, is far off
    assert rel_err(momentum_step(half[:1])) > 0.05
    assert rel_err(momentum_step([[2 * a for a in half[0]], [2 * b for b in half[1]]])) > 0.05


# -- a rank lost mid-run, the same command restarted with --resume=auto ---------------------------------------------
# 2 ranks x 24 noise images at batch 8: 3 steps per epoch, rank 0 checkpoints at steps 3 and 6; the kill lands
# after a rank logged step 4, so the restart resumes step 3 and trains steps 4 to 6 again
KILL_ARGS = ("--train_epochs=2", "--seed=5", "--DISPLAY_STEP=1", "--rank_checkpoints")
KILL_STEPS = 6


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, noise):
    """The reference: the same 2-rank command as the killed runs, never interrupted (measured 150 s)."""
    tmp = tmp_path_factory.mktemp("whole")
    table = write_rank_table(tmp / "rank_table.json", 2)
    proc = subprocess.run(_launch(tmp, noise, table, *KILL_ARGS), cwd="/", env=env(), capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return tmp / "out"


def _losses(out, since=0):
    """{(rank, global step): loss} of the ``step`` events from the ``since``-th event on."""
    return {(e["rank"], e["global_step"]): e["loss"] for e in events.read(out)[since:] if e["event"] == "step"}


@pytest.mark.parametrize("victim", kill_cases([1, 0], default=1))
def test_a_killed_rank_resumes_with_every_rank_at_the_uninterrupted_weights(noise, tmp_path, uninterrupted, victim):
    """SIGKILL of one rank (rank 1: rank 0 fails in the all-reduce; rank 0, the one that writes checkpoints)
    after the step-3 checkpoint, then the same command with --resume=auto: both ranks resume step 3 (rank 0
    restores it, rank 1 receives every variable of rank 0, Momentum slots and the global step too) and end
    bit for bit where the uninterrupted run ends, as a single process does (test_reliability.py).

    Measured on the 2-core host shared with four other suites (load average 8-23): rank 1 killed 555 s, rank 0
    killed ~16 min; the shared uninterrupted run 150 s on a quiet host, ~3 min at load 8. Each case is two
    start-ups of TensorFlow, this graph and its first step (~85 s each on a quiet host, the restarted one ~20 s
    more for the restore and the broadcast), so a case needs ~4 min even there: over the 3-minute aim."""
    table = write_rank_table(tmp_path / "rank_table.json", 2)
    out, cmd = tmp_path / "out", _launch(tmp_path, noise, table, *KILL_ARGS)  # one port for both runs
    job = tag_job(env())
    with open(tmp_path / "killed.log", "w") as log:  # a file, not a pipe nobody reads while waiting
        proc = subprocess.Popen(cmd, cwd="/", env=job, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        killed = kill_rank_after_checkpoint(proc, out, victim)
        t0 = time.monotonic()
        proc.wait(timeout=60)
        # the launcher polls every 0.2 s, then SIGTERM and at most 10 s later SIGKILL for the others
        assert proc.returncode != 0 and time.monotonic() - t0 < 15
        assert f"rank {victim} exited with -9" in (tmp_path / "killed.log").read_text()
        wait_job_gone(job)
    finally:
        kill_job(proc, job)
    saved = sorted(e["global_step"] for e in events.read(out, "checkpoint"))
    assert saved == [KILL_STEPS // 2] and saved[-1] < killed["global_step"] < KILL_STEPS, (saved, killed)

    since = len(events.read(out))
    proc = subprocess.run(cmd + ["--resume=auto"], cwd="/", env=env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    resumed = {e["rank"]: e for e in events.read(out)[since:] if e["event"] == "resume"}
    # every rank resumed the newest checkpoint, step 3: rank 0 named it, rank 1 took rank 0's state, and the
    # digest of all variables (weights, Momentum slots, step) was the same on both before step 4
    assert sorted(resumed) == [0, 1] and {e["global_step"] for e in resumed.values()} == {saved[-1]}, resumed
    assert resumed[0]["checkpoint"] == str(out / "ckpt" / f"step_{saved[-1]:09d}" / "cspdarknet53.ckpt")
    assert resumed[1]["checkpoint"] is None and resumed[1]["from_rank"] == 0
    assert resumed[0]["state_digest"] == resumed[1]["state_digest"], resumed
    # the steps after the checkpoint, trained again on both ranks with the uninterrupted run's losses
    again, reference = _losses(out, since), _losses(uninterrupted)
    assert sorted(again) == [(r, s) for r in (0, 1) for s in range(saved[-1] + 1, KILL_STEPS + 1)], sorted(again)
    assert all(again[k] == reference[k] for k in again), {k: (again[k], reference[k]) for k in again}
    # what each rank holds at the end (its own session's variables, saved by itself) is the uninterrupted run's
    # same rank's, bit for bit: 146 weights and biases, their Momentum slots, the global step
    for rank in (0, 1):
        _assert_identical(_rank_variables(out, rank), _rank_variables(uninterrupted, rank), global_step=KILL_STEPS)


def _one_error(text):
    errors = [line for line in text.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1, text[-3000:]
    return errors[0]


def test_two_ranks_refuse_a_one_process_checkpoint(noise, tmp_path, trained):
    """Rank 0 reads the rank count in the checkpoint's state.json and stops before anything is trained; the
    launcher then stops rank 1 and exits with rank 0's status."""
    start = trained[0] / "ckpt" / "step_000000006"
    table = write_rank_table(tmp_path / "rank_table.json", 2)
    proc = subprocess.run(_launch(tmp_path, noise, table, "--train_epochs=3", f"--resume={start}"), cwd="/",
                          env=env(), capture_output=True, text=True, timeout=600)
    # rank 0's line (its output is the launcher's stdout), then the launcher's own on stderr
    line = _one_error(proc.stdout)
    assert proc.returncode == 2 and f"{start / 'cspdarknet53.ckpt'}: written by a 1-rank job, this job has 2" in line
    assert "ERROR: rank 0 exited with 2" in proc.stderr
    out = tmp_path / "out"
    assert not events.read(out, "step") and not events.read(out, "resume") and not (out / "ckpt").exists()


def test_one_process_refuses_a_two_rank_checkpoint(noise, uninterrupted, tmp_path):
    """The 2-rank run's step folder, and the original's path that links its newest one, with 1 process."""
    for spec in (uninterrupted / "ckpt" / f"step_{KILL_STEPS:09d}", uninterrupted / "cspdarknet53.ckpt"):
        proc = subprocess.run([sys.executable, RECIPE / "train.py", f"--data_path={noise}",
                               f"--output_path={tmp_path}", "--device=cpu", f"--resume={spec}"], cwd=RECIPE,
                              env=env(), capture_output=True, text=True, timeout=600)
        line = _one_error(proc.stderr)
        assert proc.returncode == 2 and "written by a 2-rank job, this job has 1" in line, proc.stderr[-2000:]
        assert str(spec) in line
        assert not events.read(tmp_path) and not (tmp_path / "ckpt").exists()


def test_a_rank_whose_peer_never_answers_fails_after_the_collective_timeout(noise, tmp_path):
    """What a rank sees when its peer on another server is gone: no launcher there to stop it, only the deadline.

    A 0.1 s deadline always expires while TensorFlow is still setting up the first step, the case in which
    TensorFlow loses its own deadline (measured: without dist.CollectiveRunner's watchdog the rank waits for
    ever, on a quiet host too; with a 5 s deadline it did so only when the host was loaded)."""
    port = _free_port()
    tf_config = {"cluster": {"worker": [f"127.0.0.1:{port}", f"127.0.0.1:{port + 1}"]},
                 "task": {"type": "worker", "index": 0}}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, RECIPE / "train.py", f"--data_path={noise}", f"--output_path={tmp_path}",
                           "--batch_size=8", "--device=cpu", "--collective_timeout=0.1"], cwd=RECIPE,
                          env={**env(), "TF_CONFIG": json.dumps(tf_config)}, capture_output=True, text=True,
                          timeout=900)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR")]
    assert proc.returncode == 2 and len(errors) == 1 and "did not answer within --collective_timeout" in errors[0], \
        proc.stderr[-2000:]
    # start-up (TensorFlow import, data, graph) + the deadline + at most 10 s of watchdog backstop: measured
    # 42 to 205 s on a 2-core AMD EPYC shared with other test suites (load 7-20); the default deadline (600 s)
    # or no deadline at all would take longer than this bound
    assert "rank 0/2" in proc.stdout and time.monotonic() - t0 < 600
    assert not (tmp_path / "ckpt").exists()


def test_a_lost_rank_is_one_line_naming_the_cause():
    """cli.run's ``translate``: the errors a collective ends with when a peer is gone, as the one ERROR line."""
    for exc in (tf.errors.DeadlineExceededError(None, None, "Operation timed out"),):
        assert train.dist.explain_error(exc) == train.dist.LOST_RANK
    for exc in (tf.errors.UnavailableError(None, None, "Socket closed"), tf.errors.CancelledError(None, None, "x"),
                tf.errors.AbortedError(None, None, "x")):
        assert train.dist.explain_error(exc).startswith(f"lost the connection to another rank ({type(exc).__name__})")
    assert train.dist.explain_error(ValueError("x")) is None
    assert train.dist.explain_error(tf.errors.InvalidArgumentError(None, None, "x")) is None


BAD_TABLES = {
    "missing key": ({k: v for k, v in TABLE.items() if k != "status"}, "missing key 'status'"),
    "duplicate rank": (rank_table(2, rank_ids=[0, 0]), "duplicate rank_id 0"),
    "server_count mismatch": ({**TABLE, "server_count": "2"}, "server_count is 2"),
    "device_num mismatch": (TABLE, "--device_num is 8"),
    "unreadable JSON": ('{"version": "1.0", "server_count": ', "not valid JSON"),
}


@pytest.mark.parametrize("fault", BAD_TABLES)
def test_bad_rank_table_fails_before_any_worker_starts(noise, tmp_path, fault):
    table, message = BAD_TABLES[fault]
    cmd = _launch(tmp_path, noise, _table(tmp_path, table), "--device_num=8")
    proc = subprocess.run(cmd, cwd="/", env=env(), capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and message in lines[0] and "rank_table.json" in lines[0], \
        proc.stderr
    assert "launch: rank" not in proc.stdout and not (tmp_path / "out" / "rank_0").exists()


def test_two_servers_on_loopback_end_with_identical_weights(noise, tmp_path):
    """A two-node table (127.0.0.1 and 127.0.0.2, one device each): one launcher per "server", fresh start."""
    table = write_rank_table(tmp_path / "rank_table.json", 1, servers=("127.0.0.1", "127.0.0.2"))
    port = _free_port()
    procs = [subprocess.Popen(_launch(tmp_path, noise, table, f"--server_index={i}", "--train_epochs=1",
                                      "--train_steps=2", "--seed=4", "--rank_checkpoints", out=f"node{i}",
                                      port=port),
                              cwd="/", env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in (0, 1)]
    try:
        outs = [p.communicate(timeout=900)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    logs = [(tmp_path / f"node{r}" / f"rank_{r}" / "train.log").read_text() for r in (0, 1)]
    shards = [_field(r"shard sha256 (\w+)", log) for log in logs]
    weights = [_field(r"final weights sha256 (\w+)", log) for log in logs]
    assert shards[0] != shards[1] and weights[0] == weights[1]
    # each "server" has its own rank's final variables: equal bit for bit
    _assert_identical(_rank_variables(tmp_path / "node0", 0), _rank_variables(tmp_path / "node1", 1), global_step=2)
    assert "Final result" in outs[0] and "Final result" not in outs[1]
    record = json.loads((tmp_path / "node0" / f"{CASE}.json").read_text())
    assert record["rank_size"] == 2 and record["steps"] == 2
    assert not list((tmp_path / "node1").glob("*.json")) and not (tmp_path / "node1" / "ckpt").exists()
