#!/usr/bin/env python3
"""Repeated SIGKILL + ``--resume auto`` trials: does a killed run end with the weights of an uninterrupted one?

    python ci/kill_trials.py [recipe ...] [--trials 10] [--seed 0] [--out docs/kill_trials.json]
    python ci/kill_trials.py --ranks 2 [recipe ...] [--trials 10]      # -> docs/kill_trials_2p.json


Per recipe: one uninterrupted reference run, then N trials. A trial starts the same run and SIGKILLs its
process group at a random point after the first checkpoint exists: either a random global step plus a random
part of a step, or while a checkpoint save is in flight (a temp file of the writer exists). It restarts the run
with ``--resume auto`` (some trials kill the resumed run a second time, then resume again), lets it finish and
compares the final checkpoint tensor by tensor with the reference's. Counted per kill: the step resumed from
against the newest complete checkpoint on disk, steps redone beyond one checkpoint interval, whether a save was
cut, and temp files left behind. Writes ``--out`` (JSON) and the same name with ``.md`` (the table).

Progress, the resume point and the checkpoints come from the run's events (``<out>/events.jsonl``, written
through ``common.events``: ``step``, ``resume``, ``checkpoint``), never from log wording; the logs are kept
only to show a failure.

``--ranks 2``: the same question for a 2-rank job started through the recipe's multi-device script (the
settings of its ``tests/test_distributed.py`` kill case). A trial SIGKILLs one rank (rank 0 or 1, drawn) at a
drawn step after the first checkpoint, plus a drawn part of a step; the job must end non-zero and leave no
process (its processes carry a tag in their environment, ``common.testing.tag_job``). The same command with the
resume flag then runs to the end; every rank must resume the same global step, the newest one that every
saving rank holds, and end with each rank's final checkpoint equal to the same rank's of an uninterrupted
2-rank job.

The runs are the recipes' own reliability-test settings (tiny batches, a few steps per epoch, one checkpoint
per epoch); each needs its framework environment in ``.envs/``. Not part of ``make test``: a measured result.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from common import events  # noqa: E402
from common.checkpoint import atomic_write_text  # noqa: E402
from common.testing import free_port, job_processes, kill_job, tag_job, write_rank_table  # noqa: E402

TEMP = re.compile(r"^\..*(\.tmp|\.old-\d+)")  # the shared atomic writer's temp names (and MindSpore's staging)


@dataclass
class Recipe:
    """How to run one recipe and read its progress. ``{data}``/``{out}`` in ``args`` are filled per run."""
    env: str                    # .envs/<env>
    folder: str                 # cwd, relative to the repository root
    data: tuple                 # ("noise", format, n_train, n_test) | ("digits",) | ("digits_train_only",) | ()
    args: list
    resume: list                # added for a resumed run
    steps_per_epoch: int
    epochs: int
    ckpt_glob: str              # complete checkpoints on disk, relative to out (temp names never match)
    final: str                  # the checkpoint compared with the reference, relative to out
    loader: str                 # tf | torch | mindspore | json (how --compare reads it)
    rtol: float = 0.0
    atol: float = 0.0
    save_marker: str = ""       # a temp name containing this belongs to a checkpoint save
    python: str = ""            # interpreter (default .envs/<env>/bin/python)
    script: list = field(default_factory=list)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    def interpreter(self) -> str:
        return self.python or str(ROOT / ".envs" / self.env / "bin" / "python")

    def command(self, data, out, resume=False) -> list:
        fill = lambda a: a.replace("{data}", str(data)).replace("{out}", str(out))  # noqa: E731
        return [self.interpreter(), *self.script, *map(fill, self.args), *(self.resume if resume else [])]

    def checkpoints(self, out) -> list:
        """Global steps of the complete checkpoints still on disk in ``out``, ascending.

        A ``checkpoint`` event names a file once it is complete; pruning may have removed it since, so the
        event counts only while its file exists (the glob keeps a pruned or renamed file from counting).
        """
        on_disk = [_resolved(out, p) for p in Path(out).glob(self.ckpt_glob)]
        return sorted({int(e["global_step"]) for e in events.read(out, "checkpoint")
                       if any(_same_checkpoint(_resolved(out, e["path"]), d) for d in on_disk)})


def _resolved(out, path) -> Path:
    p = Path(path)
    return Path(os.path.realpath(p if p.is_absolute() else Path(out) / p))


def _same_checkpoint(event_path: Path, disk: Path) -> bool:
    """The event's path is the matched file, lies inside the matched folder, or is the TF prefix of its files."""
    return (event_path == disk or disk in event_path.parents
            or (disk.parent == event_path.parent and disk.name.startswith(event_path.name + ".")))


RECIPES = {
    # settings of each recipe's own SIGKILL test (tests/test_reliability.py or test_resume.py), a little longer
    "cspnet_tf1": Recipe(
        env="tf", folder="cspnet_tf1", data=("noise", "cifar10", 48, 32), script=["train.py"],
        args=["--data_path={data}", "--output_path={out}", "--epochs=4", "--batch_size=16", "--seed=5",
              "--DISPLAY_STEP=1", "--device=cpu"], resume=["--resume=auto"], steps_per_epoch=3, epochs=4,
        ckpt_glob="ckpt/step_*", final="cspdarknet53.ckpt",
        loader="tf", save_marker="ckpt"),
    "cutmix_tf2": Recipe(
        env="tf", folder="cutmix_tf2", data=("noise", "cifar10", 64, 16), script=["train.py"],
        args=["--data_dir={data}", "--output_path={out}", "--epochs=3", "--eval_static=False", "--perf",
              "--batch_size=8", "--log_steps=1", "--device=cpu"], resume=["--resume=auto"], steps_per_epoch=8,
        epochs=3, ckpt_glob="checkpoints/epoch_*",
        final="checkpoints/epoch_0003/ckpt", loader="tf", atol=1e-6, save_marker="epoch_"),
    "resnet50_cifar_pt": Recipe(
        env="torch", folder="resnet50_cifar_pt", data=("digits",),
        script=["tools/train.py", "configs/resnet/resnet50_8xb16_cifar100_perf.py"],
        args=["--work-dir", "{out}", "--data-path", "{data}", "--device", "cpu", "--seed", "3", "--no-validate",
              "--train-steps", "2", "--cfg-options", "data.samples_per_gpu=4", "data.workers_per_gpu=0",
              "runner.max_epochs=3"], resume=["--resume", "auto"], steps_per_epoch=2, epochs=3,
        ckpt_glob="epoch_*.pth", final="epoch_3.pth",
        loader="torch", atol=1e-6, save_marker=".pth"),
    "sppnet_ms": Recipe(
        env="mindspore", folder="sppnet_ms", data=("noise", "imagenet", 40, 12), script=["train.py"],
        args=["--train_path={data}", "--eval_path={data}", "--ckpt_path={out}", "--train_model=zfnet",
              "--image_size=56", "--batch_size=4", "--sink_size=3", "--epoch_size=4", "--keep_prob=1",
              "--run_eval=false", "--keep_checkpoint_max=5", "--device_target=CPU", "--seed=7"],
        resume=["--resume=auto"], steps_per_epoch=3, epochs=4, ckpt_glob="zfnet-*.ckpt", final="zfnet-4.ckpt",
        loader="mindspore",
        rtol=1e-5, atol=1e-7, save_marker="zfnet-"),
    "tinydarknet_ms": Recipe(
        env="mindspore", folder="tinydarknet_ms", data=("digits_train_only",), script=["train.py"],
        args=["--data_path={data}", "--output_path={out}", "--batch_size=16", "--train_steps=4", "--epoch_size=4",
              "--save_checkpoint_epochs=1", "--keep_checkpoint_max=2", "--log_every=1", "--device_target=CPU",
              "--num_classes=10", "--image_size=32", "--num_parallel_workers=1"], resume=["--resume=auto"],
        steps_per_epoch=4, epochs=4, ckpt_glob="checkpoints/0/train_tinydarknet_imagenet-*.ckpt",
        final="checkpoints/0/train_tinydarknet_imagenet-4_4.ckpt", loader="mindspore",
        atol=1e-6, save_marker="train_tinydarknet"),
}


# -- where to kill ---------------------------------------------------------------------------------------------
def plan_kill(rng: random.Random, recipe: Recipe, after_step: int, p_save: float):
    """A kill point later than ``after_step`` (the first checkpoint, or where a resumed run restarted).

    ``{"mode": "save", "step": e * steps_per_epoch}``: during the save after that step (epoch ``e``);
    ``{"mode": "step", "step": k, "frac": f}``: ``f`` of a step after step ``k`` was logged. None if no step is left.
    """
    spe, total = recipe.steps_per_epoch, recipe.total_steps
    saves = [e * spe for e in range(after_step // spe + 1, recipe.epochs + 1)]
    if saves and rng.random() < p_save:
        return {"mode": "save", "step": rng.choice(saves)}
    steps = list(range(after_step + 1, total))
    if not steps:
        return {"mode": "save", "step": saves[-1]} if saves else None
    return {"mode": "step", "step": rng.choice(steps), "frac": round(rng.random(), 3)}


def temps(out) -> list:
    """Temp files/folders of interrupted atomic writes anywhere under ``out``."""
    found = []
    for dirpath, dirnames, filenames in os.walk(out):
        found += [os.path.relpath(os.path.join(dirpath, n), out) for n in dirnames + filenames if TEMP.match(n)]
        dirnames[:] = [d for d in dirnames if not TEMP.match(d)]
    return sorted(found)


# -- one run, watched --------------------------------------------------------------------------------------------
class EventTail:
    """The events a run appends to ``<out>/events.jsonl`` after this tail was made (earlier runs' are skipped)."""

    def __init__(self, out):
        self.path = Path(out) / events.FILE
        self.pos = self.path.stat().st_size if self.path.exists() else 0
        self.buf = b""

    def new(self) -> list:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.pos)
                chunk = fh.read()
        except FileNotFoundError:
            return []
        self.pos += len(chunk)
        *done, self.buf = (self.buf + chunk).split(b"\n")
        found = []
        for line in done:
            try:
                found.append(json.loads(line))
            except ValueError:
                continue  # cut by a kill
        return found


def env():
    e = dict(os.environ)
    e.update(PYTHONPATH=os.pathsep.join([str(ROOT), e.get("PYTHONPATH", "")]), PYTHONUNBUFFERED="1",
             TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2", GLOG_v="3", MPLBACKEND="Agg")
    return e


class Progress:
    """What a run's events said so far: the last global step, when each step was seen, where it resumed."""

    def __init__(self, t0):
        self.t0, self.last, self.seen, self.resumed = t0, 0, {}, None

    def add(self, found):
        for e in found:
            if e.get("event") == "step":
                g = int(e["global_step"])
                self.last = max(self.last, g)
                self.seen.setdefault(g, float(e.get("time", time.time())) - self.t0)
            elif e.get("event") == "resume" and self.resumed is None:
                self.resumed = int(e["global_step"])


def watched_run(recipe: Recipe, cmd, out, log_path, plan=None, first_kill=False, step_sec=0.0, timeout=1800):
    """Run ``cmd``; with a ``plan``, SIGKILL its process group there. Returns a dict of what happened."""
    Path(out).mkdir(parents=True, exist_ok=True)
    tail, t0 = EventTail(out), time.time()
    progress = Progress(t0)
    temps_before = set(temps(out))
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([str(c) for c in cmd], cwd=ROOT / recipe.folder, env=env(), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        killed = _watch(recipe, proc, out, tail, progress, plan, first_kill, step_sec, timeout, log_path)
    finally:
        if proc.poll() is None:
            _kill(proc)
    progress.add(tail.new())
    new_temps = sorted(set(temps(out)) - temps_before)
    return {"rc": proc.returncode, "killed": killed, "seconds": round(time.time() - t0, 1),
            "last_step": progress.last, "step_seen_at": progress.seen, "resumed_step": progress.resumed,
            "checkpoints": recipe.checkpoints(out), "new_temps": new_temps,
            "during_save": killed and any(recipe.save_marker in t for t in new_temps),
            "log": Path(log_path).read_text(errors="replace")}


def _watch(recipe, proc, out, tail, progress, plan, first_kill, step_sec, timeout, log_path) -> bool:
    """Poll the run's events until it ends or the plan says kill; True when it was killed."""
    ckpt_seen = False
    while True:
        progress.add(tail.new())
        if proc.poll() is not None:
            return False
        if time.time() - progress.t0 > timeout:
            raise TimeoutError(f"{recipe.folder}: run still going after {timeout} s (log {log_path})")
        # a first kill waits for a checkpoint to have been written (it may be gone again: a bad prune)
        ckpt_seen = ckpt_seen or not first_kill or bool(recipe.checkpoints(out))
        armed = plan is not None and progress.last >= plan["step"] and ckpt_seen
        if armed and plan["mode"] == "step":
            time.sleep(plan["frac"] * step_sec)
            return _kill(proc)
        if armed and plan["mode"] == "save":
            # the save after this step is running or about to: kill as soon as its temp file shows,
            # or at once if it already finished (recorded as a save missed)
            if plan["step"] in recipe.checkpoints(out) or any(recipe.save_marker in t for t in temps(out)):
                return _kill(proc)
            time.sleep(0.001)
            continue
        time.sleep(0.02)


def _kill(proc) -> bool:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    return proc.returncode == -signal.SIGKILL


def median_step_seconds(seen: dict) -> float:
    times = [seen[s] for s in sorted(seen)]
    gaps = sorted(b - a for a, b in zip(times, times[1:]))
    return gaps[len(gaps) // 2] if gaps else 0.0


# -- comparing final checkpoints (runs in the recipe's framework environment) -----------------------------------
def load_tensors(kind, path):
    import numpy as np
    if kind == "tf":
        import tensorflow as tf
        reader = tf.train.load_checkpoint(str(path))
        return {n: np.asarray(reader.get_tensor(n)) for n, dt in reader.get_variable_to_dtype_map().items()
                if dt != tf.string}
    if kind == "torch":
        import torch
        ck = torch.load(str(path), map_location="cpu", weights_only=True)
        flat = {}

        def walk(prefix, obj):
            if isinstance(obj, dict):
                for k, v in obj.items():
                    walk(f"{prefix}.{k}" if prefix else str(k), v)
            elif torch.is_tensor(obj):
                flat[prefix] = obj.detach().float().numpy() if obj.is_floating_point() else obj.numpy()
        walk("", {"state_dict": ck["state_dict"], "optimizer": ck.get("optimizer", {}).get("state", {})})
        return flat
    if kind == "mindspore":
        import mindspore as ms
        return {k: v.asnumpy() for k, v in ms.load_checkpoint(str(path)).items() if hasattr(v, "asnumpy")}
    if kind == "npz":
        with np.load(str(path)) as f:
            return {k: f[k] for k in f.files}
    if kind == "json":
        return {k: np.asarray(v) for k, v in json.loads(Path(path).read_text()).items()}
    raise ValueError(f"unknown checkpoint kind {kind}")


def compare_tensors(a: dict, b: dict, rtol: float, atol: float) -> dict:
    import numpy as np
    if a.keys() != b.keys():
        return {"tensors": len(a), "identical": False, "within_tolerance": False, "max_abs_diff": None,
                "worst": f"names differ: {sorted(a.keys() ^ b.keys())[:5]}"}
    worst, max_diff, identical, within = None, 0.0, True, True
    for k in sorted(a):
        x, y = np.asarray(a[k]), np.asarray(b[k])
        if x.shape != y.shape:
            return {"tensors": len(a), "identical": False, "within_tolerance": False, "max_abs_diff": None,
                    "worst": f"{k}: shape {x.shape} vs {y.shape}"}
        if np.array_equal(x, y, equal_nan=x.dtype.kind == "f"):
            continue
        identical = False
        d = float(np.max(np.abs(y.astype(np.float64) - x.astype(np.float64))))
        within &= bool(np.allclose(y, x, rtol=rtol, atol=atol))
        if d >= max_diff:
            worst, max_diff = k, d
    return {"tensors": len(a), "identical": identical, "within_tolerance": within, "max_abs_diff": max_diff,
            "worst": worst}


def compare_files(recipe, ref, other, loader=None) -> dict:
    """Ask the recipe's environment to compare two checkpoints; returns compare_tensors' dict."""
    cmd = [recipe.interpreter(), str(Path(__file__).resolve()), "--compare", loader or recipe.loader, str(ref),
           str(other), str(recipe.rtol), str(recipe.atol)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:300], "identical": False,
                "within_tolerance": False}
    return json.loads(lines[-1])


# -- a trial ----------------------------------------------------------------------------------------------------
def run_trial(recipe: Recipe, rng, data, work, ref_final, step_sec, p_save, p_second) -> dict:
    out, trial = work / "out", {"kills": [], "resumes": []}
    plan = plan_kill(rng, recipe, recipe.steps_per_epoch, p_save)
    second = rng.random() < p_second
    resume, n, seconds = False, 0, 0.0
    while True:
        n += 1
        r = watched_run(recipe, recipe.command(data, out, resume), out, work / f"run{n}.log", plan,
                        first_kill=not resume, step_sec=step_sec)
        seconds += r["seconds"]
        if resume:
            resumed = r["resumed_step"]
            trial["resumes"].append({"resumed_step": resumed, "newest_on_disk": trial["kills"][-1]["newest_ckpt"],
                                     "from_newest": resumed == trial["kills"][-1]["newest_ckpt"]})
        if plan is None or not r["killed"]:
            break
        newest = max(r["checkpoints"], default=0)
        trial["kills"].append({"plan": plan, "last_step": r["last_step"], "newest_ckpt": newest,
                               "during_save": r["during_save"],
                               "new_temps": r["new_temps"], "seconds": r["seconds"]})
        resume = True
        plan = plan_kill(rng, recipe, newest, p_save) if second and len(trial["kills"]) == 1 else None
    trial.update(finished=r["rc"] == 0 and not r["killed"], rc=r["rc"], not_killed=not trial["kills"],
                 temps_left=temps(out), seconds=round(seconds, 1))
    if not trial["finished"]:
        trial["tail"] = r["log"][-2000:]
        return trial
    # steps redone after each kill: from the step the next run resumed at to the last step logged before the kill
    for kill, res in zip(trial["kills"], trial["resumes"]):
        if res["resumed_step"] is not None:
            kill["redone"] = kill["last_step"] - res["resumed_step"]
            kill["lost_beyond_interval"] = max(0, kill["redone"] - recipe.steps_per_epoch)
    trial["compare"] = compare_files(recipe, ref_final, out / recipe.final)
    return trial


def trial_loop(label, trials, work: Path, run_one, describe_one, ok, keep, log) -> list:
    """``trials`` trials, each ``run_one(i, its folder)``, logged; a trial's folder is removed when ``ok``
    says it passed (unless ``keep``), so that only failures are left to look at."""
    results = []
    for i in range(trials):
        tdir = work / f"trial_{i:02d}"
        shutil.rmtree(tdir, ignore_errors=True)
        tdir.mkdir()
        trial = run_one(i, tdir)
        if "tail" in trial:  # no path of this machine in the report
            trial["tail"] = trial["tail"].replace(str(work), "<work>").replace(str(ROOT), ".")
        results.append(trial)
        log(f"{label} {i}: " + describe_one(trial))
        if not keep and ok(trial):
            shutil.rmtree(tdir, ignore_errors=True)
    return results


def prepare_data(recipe: Recipe, work: Path, spec: tuple = None) -> Path:
    spec = recipe.data if spec is None else spec
    if not spec:
        return work
    kind = spec[0]
    if kind in ("digits", "digits_train_only"):
        digits = ROOT / "data" / "digits"
        if not (digits / "imagenet" / "train").is_dir() or not (digits / "cifar-100-python").is_dir():
            raise SystemExit(f"ERROR: {digits}: digits data missing: run `make data`")
        if kind == "digits":
            return digits
        root = work / "train_only"  # no val folder: the run skips its closing evaluation, as in the test
        root.mkdir(parents=True, exist_ok=True)
        if not (root / "train").exists():
            (root / "train").symlink_to(digits / "imagenet" / "train")
        return root
    _, fmt, n_train, n_test = spec
    out = work / f"noise_{fmt}_{n_train}"
    subprocess.run([str(ROOT / ".envs" / "ci" / "bin" / "python"), str(ROOT / "ci" / "make_data.py"), "--noise",
                    "--out", str(out), "--formats", fmt, "--n_train", str(n_train), "--n_test", str(n_test)],
                   check=True, capture_output=True)
    return out / "imagenet" if fmt == "imagenet" else out


def run_recipe(name, recipe: Recipe, trials, seed, work: Path, p_save, p_second, keep=False, log=print) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    data = prepare_data(recipe, work)
    t0 = time.time()
    ref = watched_run(recipe, recipe.command(data, work / "reference"), work / "reference", work / "reference.log")
    if ref["rc"] != 0:
        raise SystemExit(f"ERROR: {name}: the reference run failed (exit {ref['rc']}):\n{ref['log'][-2000:]}")
    step_sec = median_step_seconds(ref["step_seen_at"])
    log(f"{name}: reference run {ref['seconds']:.0f} s, {ref['last_step']} steps, {step_sec:.2f} s/step")
    results = trial_loop(
        f"{name} trial", trials, work,
        lambda i, tdir: run_trial(recipe, random.Random(f"{seed}-{name}-{i}"), data, tdir,
                                  work / "reference" / recipe.final, step_sec, p_save, p_second),
        describe, lambda t: t.get("compare", {}).get("within_tolerance"), keep, log)
    shown = recipe.command("<data>", "<out>")
    shown[0] = f".envs/{recipe.env}/bin/python"
    return {"recipe": name, "trials_command": f"python ci/kill_trials.py {name} --trials {trials} --seed {seed} "
                                              f"--p_save {p_save} --p_second {p_second}",
            "command": f"cd {recipe.folder} && " + " ".join(shlex.quote(c) for c in shown),
            "resume_flag": " ".join(recipe.resume), "steps_per_epoch": recipe.steps_per_epoch, "epochs": recipe.epochs,
            "checkpoint_interval_steps": recipe.steps_per_epoch,
            "tolerance": {"rtol": recipe.rtol, "atol": recipe.atol},
            "reference_seconds": ref["seconds"], "seconds_per_step": round(step_sec, 3), "trials": results,
            "summary": summarise(results), "seconds": round(time.time() - t0)}


def describe(trial) -> str:
    kills = ", ".join(f"{k['plan']['mode']}@{k['last_step']}" + (" (in save)" if k["during_save"] else "")
                      for k in trial["kills"]) or "not killed"
    res = ", ".join(str(r["resumed_step"]) for r in trial["resumes"])
    cmp_ = trial.get("compare", {})
    verdict = ("identical" if cmp_.get("identical") else
               f"max diff {cmp_.get('max_abs_diff')}" + ("" if cmp_.get("within_tolerance") else " MISMATCH")
               ) if cmp_ else f"did not finish (exit {trial['rc']})"
    return f"killed {kills}; resumed at {res or '-'}; {verdict}; temps left {len(trial['temps_left'])}"


# -- multi-rank trials (--ranks 2) ------------------------------------------------------------------------------
@dataclass
class Job:
    """A recipe's 2-rank job through its multi-device script. ``{data}``, ``{out}``, ``{table}``, ``{port}`` and
    ``{run}`` (the run's folder) are filled per run in ``argv`` and ``env_vars``; ``finals``: per rank, the
    files compared with the uninterrupted job's, as (loader, path relative to ``events_dir``)."""
    recipe: str                 # RECIPES key: its env, folder and interpreter
    data: tuple                 # as Recipe.data
    script: str                 # relative to the recipe folder
    argv: list
    resume: list
    events_dir: str             # where the job's events.jsonl is, relative to the run folder
    finals: dict
    steps_per_epoch: int
    epochs: int
    env_vars: dict = field(default_factory=dict)
    cwd: str = "recipe"         # recipe | run (the script writes into its working directory)
    saving_ranks: tuple = (0, 1)  # the ranks that write checkpoints

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    def launch(self, data, run: Path, resume=False):
        """(command, cwd, environment) of one run of the job in the folder ``run``."""
        run.mkdir(parents=True, exist_ok=True)
        table_path = run / "rank_table.json"
        if not table_path.exists():
            write_rank_table(table_path, 2)
        values = {"{data}": str(data), "{out}": str(run / "out"), "{table}": str(table_path), "{run}": str(run),
                  "{port}": str(free_port(consecutive=2))}  # rank r of some recipes listens on port + r

        def fill(a):
            for k, v in values.items():
                a = a.replace(k, v)
            return a
        recipe = RECIPES[self.recipe]
        e = dict(env(), MZ_PYTHON=recipe.interpreter(), **{k: fill(v) for k, v in self.env_vars.items()})
        cmd = ["bash", str(ROOT / recipe.folder / self.script), *map(fill, self.argv),
               *(self.resume if resume else [])]
        return cmd, (ROOT / recipe.folder if self.cwd == "recipe" else run), tag_job(e)


JOBS = {
    # each recipe's tests/test_distributed.py kill case (noise or digits data, tiny batches), run a little longer
    "cspnet_tf1": Job(
        recipe="cspnet_tf1", data=("noise", "cifar10", 48, 32), script="test/train_performance_8p.sh",
        argv=["--data_path={data}", "--rank_table={table}", "--output_path={out}", "--device=cpu", "--port={port}",
              "--batch_size=8", "--train_epochs=3", "--seed=5", "--DISPLAY_STEP=1", "--rank_checkpoints"],
        resume=["--resume=auto"], events_dir="out", steps_per_epoch=3, epochs=3, saving_ranks=(0,),
        finals={r: [("tf", f"rank_{r}/final/cspdarknet53.ckpt")] for r in (0, 1)}),
    "cutmix_tf2": Job(
        recipe="cutmix_tf2", data=("noise", "cifar10", 64, 16), script="test/train_full_8p.sh",
        argv=["--data_path={data}", "--rank_table={table}", "--output_path={out}", "--device=cpu", "--port={port}",
              "--train_epochs=3", "--seed=7", "--batch_size=2", "--log_steps=1", "--rank_checkpoints"],
        resume=["--resume=auto"], events_dir="out", steps_per_epoch=16, epochs=3,
        finals={r: [("tf", f"{base}checkpoints/epoch_0003/ckpt"), ("npz", f"{base}checkpoints/epoch_0003/local.npz")]
                for r, base in ((0, ""), (1, "rank_1/"))}),
    "resnet50_cifar_pt": Job(
        recipe="resnet50_cifar_pt", data=("digits",), script="test/train_performance_8p.sh",
        argv=["--data_path={data}", "--output_path={out}", "--rank_table={table}", "--device=cpu", "--batch_size=2",
              "--train_epochs=4", "--train_steps=1", "--no-validate", "--cfg-options=data.workers_per_gpu=0",
              "--cfg-options=optimizer.lr=0.01"],
        resume=["--resume=auto"], events_dir="out", steps_per_epoch=1, epochs=4, env_vars={"PORT": "{port}"},
        finals={0: [("torch", "epoch_4.pth")], 1: [("torch", "rank1_epoch_4.pth")]}),
    "sppnet_ms": Job(
        recipe="sppnet_ms", data=("noise", "imagenet", 40, 12), script="scripts/run_distribution_ascend.sh",
        argv=["{table}", "{data}", "{data}", "zfnet", "--device=cpu", "--image_size=56", "--batch_size=4",
              "--run_eval=false", "--vet_images=false", "--epoch_size=4", "--sink_size=3", "--keep_prob=1",
              "--keep_checkpoint_max=4", "--rank_checkpoints=true", "--seed=7"],
        resume=["--resume=auto"], events_dir="zfnet_train_parallel", steps_per_epoch=3, epochs=4, cwd="run",
        env_vars={"MASTER_PORT": "{port}"},
        finals={0: [("mindspore", "ckpt/zfnet-4.ckpt")], 1: [("mindspore", "ckpt/rank_1/zfnet-4.ckpt")]}),
    "tinydarknet_ms": Job(
        recipe="tinydarknet_ms", data=("digits_train_only",), script="scripts/run_distribute_train.sh",
        argv=["{table}", "imagenet", "{data}", "--output_path={out}", "--batch_size=8", "--train_steps=3",
              "--epoch_size=4", "--save_checkpoint_epochs=1", "--keep_checkpoint_max=4", "--log_every=1",
              "--device_target=CPU", "--num_classes=10", "--image_size=32", "--num_parallel_workers=1"],
        resume=["--resume=auto"], events_dir="out", steps_per_epoch=3, epochs=4, cwd="run",
        env_vars={"MASTER_PORT": "{port}", "CLUSTER_TIME_OUT": "180"},
        finals={r: [("mindspore", f"checkpoints/{r}/train_tinydarknet_imagenet-4_3.ckpt")] for r in (0, 1)}),
}
JOB_TIMEOUT = 1200   # one whole 2-rank run (measured: 2-4 min on 2 quiet cores; the resumed run is shorter)
NOTICE_LIMIT = 300   # from the kill to the launcher's exit (measured: 1-41 s; msrun's heartbeat is the slow one)
GONE_GRACE = 30      # after the launcher's exit, until no process of the job is left


def plan_rank_kill(rng: random.Random, job: Job) -> dict:
    """Which rank, and when: a drawn part of a step after a drawn step past the first checkpoint."""
    return {"rank": rng.choice([0, 1]), "step": rng.randrange(job.steps_per_epoch + 1, job.total_steps),
            "frac": round(rng.random(), 3)}


def saved_steps(job: Job, found: list) -> dict:
    """{rank: sorted global steps of its checkpoint events} for the ranks that save."""
    return {r: sorted({e["global_step"] for e in found if e["event"] == "checkpoint" and e["rank"] == r})
            for r in job.saving_ranks}


def job_run(job: Job, data, run: Path, log_path, resume=False, plan=None, step_sec=0.0) -> dict:
    """One run of the 2-rank job; with a ``plan``, SIGKILL its rank ``plan["rank"]`` there (that process only)."""
    evdir = run / job.events_dir
    n_before = len(events.read(evdir))
    cmd, cwd, job_env = job.launch(data, run, resume)
    t0, killed = time.time(), None
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=job_env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        while proc.poll() is None and killed is None:
            if time.time() - t0 > JOB_TIMEOUT:
                raise TimeoutError(f"{job.recipe}: 2-rank run still going after {JOB_TIMEOUT} s (log {log_path})")
            found = events.read(evdir)[n_before:]
            mine = [e for e in found if e["event"] == "step" and plan and e["rank"] == plan["rank"]]
            if plan and any(saved_steps(job, found).values()) and mine and mine[-1]["global_step"] >= plan["step"]:
                time.sleep(plan["frac"] * step_sec)
                killed = events.read(evdir)[n_before:]
                victim = [e for e in killed if e["event"] == "step" and e["rank"] == plan["rank"]][-1]
                try:
                    os.kill(victim["pid"], signal.SIGKILL)
                except ProcessLookupError:
                    pass
                killed = victim
                break
            time.sleep(0.1)
        t_kill = time.time()
        try:
            proc.wait(timeout=NOTICE_LIMIT if killed else JOB_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
        noticed = None if proc.poll() is None else round(time.time() - t_kill, 1)
        deadline = time.time() + GONE_GRACE
        while job_processes(job_env) and time.time() < deadline:
            time.sleep(0.2)
        left = job_processes(job_env)
    finally:
        kill_job(proc, job_env)  # whatever of the job is still there (a time-out, a process left behind)
    found = events.read(evdir)[n_before:]
    return {"rc": proc.returncode, "killed": killed, "exit_seconds_after_kill": noticed if killed else None,
            "processes_left": len(left), "seconds": round(time.time() - t0, 1),
            "last_step": {r: max((e["global_step"] for e in found if e["event"] == "step" and e["rank"] == r),
                                 default=0) for r in (0, 1)},
            "step_times": [e["time"] for e in found if e["event"] == "step" and e["rank"] == 0],
            "resumed": {e["rank"]: e["global_step"] for e in found if e["event"] == "resume"},
            "saved": saved_steps(job, found), "log": Path(log_path).read_text(errors="replace")}


def run_rank_trial(job: Job, rng, data, work: Path, ref: Path, step_sec) -> dict:
    plan = plan_rank_kill(rng, job)
    run = work / "run"
    first = job_run(job, data, run, work / "killed.log", plan=plan, step_sec=step_sec)
    trial = {"plan": plan, "killed_step": first["killed"] and first["killed"]["global_step"],
             "job_failed": first["rc"] not in (0, None), "exit_seconds_after_kill": first["exit_seconds_after_kill"],
             "processes_left": first["processes_left"], "saved_before_kill": first["saved"],
             "temps_after_kill": temps(run)}
    if first["killed"] is None:  # the job ended before the kill point (or failed by itself)
        trial.update(finished=False, rc=first["rc"], tail=first["log"][-2000:])
        return trial
    held = [set(v) for v in first["saved"].values()]
    trial["newest_common"] = max(set.intersection(*held), default=0)
    second = job_run(job, data, run, work / "resumed.log", resume=True)
    resumed = second["resumed"]
    trial["last_step_before_kill"] = max(first["last_step"].values())
    trial.update(rc=second["rc"], finished=second["rc"] == 0, resumed=resumed,
                 agreed=sorted(resumed) == [0, 1] and len(set(resumed.values())) == 1,
                 temps_left=temps(run), seconds=round(first["seconds"] + second["seconds"], 1))
    trial.update(resume_judged(trial))
    if not trial["finished"]:
        trial["tail"] = second["log"][-2000:]
        return trial
    trial["compare"] = {f"rank {r} {Path(path).name}": compare_files(RECIPES[job.recipe], ref / path,
                                                                   run / job.events_dir / path, loader)
                        for r, files in job.finals.items() for loader, path in files}
    return trial


def resume_judged(trial) -> dict:
    """Whether the ranks resumed the newest checkpoint that every saving rank held at the kill.

    Held = logged (a ``checkpoint`` event) or finished on disk: a rank killed after renaming a checkpoint into
    place and before logging it leaves a complete checkpoint without its event, and resuming from that one is
    right (the resumed run loads it and must still end bit-exact). So the step resumed must be the newest
    logged common one, or a newer one no later than the last step run before the kill (counted apart as
    ``resumed_unlogged``)."""
    steps = set((trial.get("resumed") or {}).values())
    step = min(steps) if len(steps) == 1 else None
    newest, last = trial["newest_common"], trial["last_step_before_kill"]
    return {"from_newest_common": step is not None and newest <= step <= last,
            "resumed_unlogged": step is not None and newest < step <= last}


def run_job_trials(name, job: Job, trials, seed, work: Path, keep=False, log=print) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    data = prepare_data(RECIPES[job.recipe], work, job.data)
    t0 = time.time()
    ref = job_run(job, data, work / "reference", work / "reference.log")
    if ref["rc"] != 0:
        raise SystemExit(f"ERROR: {name}: the uninterrupted 2-rank run failed (exit {ref['rc']}):\n"
                         f"{ref['log'][-2000:]}")
    times = ref["step_times"]
    gaps = sorted(b - a for a, b in zip(times, times[1:]))
    step_sec = gaps[len(gaps) // 2] if gaps else 0.0
    log(f"{name}: uninterrupted 2-rank run {ref['seconds']:.0f} s, {step_sec:.2f} s/step")
    results = trial_loop(
        f"{name} 2p trial", trials, work,
        lambda i, tdir: run_rank_trial(job, random.Random(f"{seed}-{name}-2p-{i}"), data, tdir,
                                       work / "reference" / job.events_dir, step_sec),
        describe_rank_trial, rank_trial_ok, keep, log)
    shown = ["bash", f"{job.script}", *job.argv]
    return {"recipe": name, "ranks": 2,
            "trials_command": f"python ci/kill_trials.py --ranks 2 {name} --trials {trials} --seed {seed}",
            "command": " ".join(f"{k}={v}" for k, v in job.env_vars.items()) + (" " if job.env_vars else "")
                       + f"cd {RECIPES[job.recipe].folder} && " + " ".join(shlex.quote(c) for c in shown),
            "resume_flag": " ".join(job.resume), "steps_per_epoch": job.steps_per_epoch, "epochs": job.epochs,
            "tolerance": {"rtol": RECIPES[job.recipe].rtol, "atol": RECIPES[job.recipe].atol},
            "reference_seconds": ref["seconds"], "seconds_per_step": round(step_sec, 3), "trials": results,
            "summary": summarise_rank_trials(results), "seconds": round(time.time() - t0)}


def rank_trial_ok(trial) -> bool:
    cmp_ = trial.get("compare") or {}
    return bool(trial.get("finished") and trial.get("job_failed") and not trial.get("processes_left")
                and trial.get("agreed") and trial.get("from_newest_common") and not trial.get("temps_left")
                and cmp_ and all(c.get("within_tolerance") for c in cmp_.values()))


def describe_rank_trial(trial) -> str:
    p = trial["plan"]
    if trial.get("killed_step") is None:
        return f"rank {p['rank']} not killed (job ended, exit {trial.get('rc')})"
    cmp_ = trial.get("compare") or {}
    verdict = ("identical" if cmp_ and all(c.get("identical") for c in cmp_.values()) else
               "max diff " + str(max((c.get("max_abs_diff") or 0.0 for c in cmp_.values()), default=None))
               + ("" if cmp_ and all(c.get("within_tolerance") for c in cmp_.values()) else " MISMATCH")
               ) if cmp_ else f"did not finish (exit {trial.get('rc')})"
    return (f"rank {p['rank']} killed at step {trial['killed_step']}; job exit after "
            f"{trial['exit_seconds_after_kill']} s, {trial['processes_left']} processes left; resumed "
            f"{trial.get('resumed')} (newest common {trial.get('newest_common')}); {verdict}")


def summarise_rank_trials(trials) -> dict:
    killed = [t for t in trials if t.get("killed_step") is not None]
    compared = [c for t in trials for c in (t.get("compare") or {}).values()]
    notice = [t["exit_seconds_after_kill"] for t in killed if t["exit_seconds_after_kill"] is not None]
    return {
        "trials": len(trials),
        "killed_rank_0": sum(t["plan"]["rank"] == 0 for t in killed),
        "killed_rank_1": sum(t["plan"]["rank"] == 1 for t in killed),
        "job_failed": sum(bool(t["job_failed"]) for t in killed),
        "max_exit_seconds": max(notice, default=None),
        "processes_left": sum(t["processes_left"] for t in killed),
        "agreed": sum(bool(t.get("agreed")) for t in killed),
        "from_newest_common": sum(bool(t.get("from_newest_common")) for t in killed),
        "resumed_unlogged": sum(bool(t.get("resumed_unlogged")) for t in killed),
        "finished": sum(bool(t.get("finished")) for t in trials),
        "bit_exact": sum(bool(t.get("compare")) and all(c.get("identical") for c in t["compare"].values())
                         for t in trials),
        "within_tolerance": sum(bool(t.get("compare")) and all(c.get("within_tolerance")
                                                              for c in t["compare"].values()) for t in trials),
        "failures": sum(not rank_trial_ok(t) for t in trials),
        "max_abs_diff": max((c.get("max_abs_diff") or 0.0 for c in compared), default=0.0),
        "runs_with_temps_left": sum(bool(t.get("temps_left")) for t in trials),
    }


def markdown_ranks(results) -> str:
    return table(["recipe", "trials", "killed rank 0 / rank 1", "job ended non-zero",
                  "slowest exit after the kill (s)", "processes left", "every rank resumed the same step",
                  "... the newest every saving rank held (of them: saved, not yet logged)", "finished",
                  "bit-exact on both ranks", "within tolerance", "failures", "largest weight diff",
                  "runs left with temp files", "seconds"], results, lambda r, s: [
        r["recipe"], s["trials"], f"{s['killed_rank_0']} / {s['killed_rank_1']}", s["job_failed"],
        s["max_exit_seconds"], s["processes_left"], s["agreed"],
        f"{s['from_newest_common']} ({s['resumed_unlogged']})", s["finished"], s["bit_exact"],
        s["within_tolerance"], s["failures"], f"{s['max_abs_diff']:.3g}", s["runs_with_temps_left"], r["seconds"]])


# -- summary and table ------------------------------------------------------------------------------------------
def summarise(trials) -> dict:
    kills = [k for t in trials for k in t["kills"]]
    resumes = [r for t in trials for r in t["resumes"]]
    compared = [t["compare"] for t in trials if "compare" in t]
    return {
        "trials": len(trials),
        "kills": len(kills),
        "second_kills": sum(len(t["kills"]) > 1 for t in trials),
        "kills_during_save": sum(k["during_save"] for k in kills),
        "resumes": len(resumes),
        "resumed_from_newest": sum(r["from_newest"] for r in resumes),
        "finished": sum(t["finished"] for t in trials),
        "not_killed": sum(t["not_killed"] for t in trials),
        "bit_exact": sum(bool(c.get("identical")) for c in compared),
        "within_tolerance": sum(bool(c.get("within_tolerance")) for c in compared),
        "mismatches": sum(not c.get("within_tolerance") for c in compared) + sum(not t["finished"] for t in trials),
        "max_redone": max((k.get("redone", 0) for k in kills), default=0),
        "lost_beyond_interval": sum(k.get("lost_beyond_interval", 0) for k in kills),
        "max_abs_diff": max((c.get("max_abs_diff") or 0.0 for c in compared), default=0.0),
        "runs_with_temps_left": sum(bool(t["temps_left"]) for t in trials),
    }


def table(columns, results, cells) -> str:
    """A markdown table: one row per recipe result, ``cells(result, its summary)`` in ``columns``' order."""
    rows = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    rows += ["| " + " | ".join(str(c) for c in cells(r, r["summary"])) + " |" for r in results]
    return "\n".join(rows) + "\n"


def markdown(results) -> str:
    return table(["recipe", "trials", "kills (2nd kills)", "kills during a save", "resumed from the newest checkpoint",
                  "finished", "bit-exact", "within tolerance", "mismatches",
                  "steps lost beyond the interval (most redone / interval)", "largest weight diff",
                  "runs left with temp files", "seconds"], results, lambda r, s: [
        r["recipe"], s["trials"], f"{s['kills']} ({s['second_kills']})", s["kills_during_save"],
        f"{s['resumed_from_newest']}/{s['resumes']}", s["finished"], s["bit_exact"], s["within_tolerance"],
        s["mismatches"], f"{s['lost_beyond_interval']} ({s['max_redone']} / {r['checkpoint_interval_steps']})",
        f"{s['max_abs_diff']:.3g}", s["runs_with_temps_left"], r["seconds"]])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("recipes", nargs="*", help=f"default: all of {list(RECIPES)}")
    ap.add_argument("--ranks", type=int, default=1, choices=[1, 2],
                    help="2: kill one rank of a 2-rank job started through the recipe's multi-device script")
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0, help="seeds the kill points (the runs keep their own --seed)")
    ap.add_argument("--p_save", type=float, default=0.3, help="share of kills aimed at a checkpoint save")
    ap.add_argument("--p_second", type=float, default=0.4, help="share of trials whose resumed run is killed again")
    ap.add_argument("--out", default=None,
                    help="default: docs/kill_trials.json (--ranks 1), docs/kill_trials_2p.json (--ranks 2)")
    ap.add_argument("--work", default=None, help="folder for the runs (default: a temp folder, removed at the end)")
    ap.add_argument("--keep", action="store_true", help="keep every trial's output (default: only failed ones)")
    args = ap.parse_args(argv)
    unknown = [r for r in args.recipes if r not in RECIPES]
    if unknown or args.trials < 1:
        ap.error(f"unknown recipe(s) {unknown}; known: {list(RECIPES)}" if unknown else "--trials must be >= 1")
    names = args.recipes or list(RECIPES)
    for name in names:
        py = Path(RECIPES[name].interpreter())
        if not py.is_file():
            raise SystemExit(f"ERROR: {py}: environment missing for {name}: run `make setup`")
    multi = args.ranks == 2
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="kill_trials_"))
    out = Path(args.out or ROOT / "docs" / ("kill_trials_2p.json" if multi else "kill_trials.json"))
    render = markdown_ranks if multi else markdown
    previous = json.loads(out.read_text()) if out.is_file() else {}
    results = {r["recipe"]: r for r in previous.get("results", [])}
    try:
        for name in names:
            if multi:
                results[name] = run_job_trials(name, JOBS[name], args.trials, args.seed, work / name, keep=args.keep)
            else:
                results[name] = run_recipe(name, RECIPES[name], args.trials, args.seed, work / name, args.p_save,
                                           args.p_second, keep=args.keep)
            # written after every recipe: a later failure keeps what was measured
            ordered = [results[n] for n in RECIPES if n in results]
            atomic_write_text(out, json.dumps({"results": ordered}, indent=1))
            atomic_write_text(out.with_suffix(".md"), render(ordered))
    finally:
        if not args.work:
            bad = [str(p) for p in work.rglob("trial_*")]
            if bad:
                print(f"kept the output of trials that did not match: {bad}")
            else:
                shutil.rmtree(work, ignore_errors=True)
    print(render([results[n] for n in RECIPES if n in results]))
    failed = sum(results[n]["summary"]["failures" if multi else "mismatches"] for n in names)
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "--compare":
        _, _, kind, ref, other, rtol, atol = sys.argv
        print(json.dumps(compare_tensors(load_tensors(kind, ref), load_tensors(kind, other), float(rtol), float(atol))))
        sys.exit(0)
    sys.exit(main())
