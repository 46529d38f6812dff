"""CPU choices that depend on the host, each decided by a measurement on the running host, cached per host.

Why probes and not vendor or ISA names: the speed-ups of this repository were first chosen on one AMD EPYC,
and an Intel Xeon with AVX512-FP16 and AMX then behaved differently (a kernel that did not build, layouts that
ran slower). So a recipe states its candidates for each choice and how to time one, and ``probe`` times every
candidate on this host (alternately, ``rounds`` times, best of each) and keeps the default unless another
candidate is at least ``MARGIN`` faster. The result is cached in ``$MODELZOO_TUNE_CACHE`` (default
``$XDG_CACHE_HOME/modelzoo/cputune``) under a key of the CPU model, its flags, the core count and the caller's
``key`` (framework version, probe version), written atomically under a file lock so that the ranks of a
distributed run measure once and the others read the result. A choice cached from a probe that ran on a busy
host stays until the cache is cleared, or until a job runs with ``MODELZOO_RETUNE=1``: it measures every
choice again, once (entries written before the job started are ignored; the ranks of the job share the new one).

Every decision of the process (probed, read from the cache, set by the user, or a fixed rule) is kept in
this module: ``line()`` is the ``cpu tuning: ...`` line a recipe prints at start, and ``common.runrecord``
writes ``as_record()`` into the JSON run record as ``cpu_tuning``.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable, Optional

MARGIN = 0.10  # a non-default candidate must be this much faster: closer timings are noise on a busy host
PROBE_RESULT = "MODELZOO_PROBE_SECONDS"  # what a probe child prints before the seconds it measured
RETUNE = "MODELZOO_RETUNE"  # "1": measure again every choice cached before this job started
# flags worth naming in the record (the cache key uses all of them)
NOTABLE_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")


@dataclass
class Decision:
    name: str
    choice: str
    how: str  # probed | cached | user | rule
    seconds: dict = field(default_factory=dict)  # candidate -> best time of one probe step (probed/cached)
    note: str = ""


_decisions: dict[str, Decision] = {}


def _cpuinfo(path="/proc/cpuinfo") -> dict:
    info = {"vendor": "", "model": "", "flags": []}
    try:
        text = Path(path).read_text()
    except OSError:
        return info
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "vendor_id" and not info["vendor"]:
            info["vendor"] = value
        elif key == "model name" and not info["model"]:
            info["model"] = value
        elif key in ("flags", "Features") and not info["flags"]:
            info["flags"] = value.split()
    return info


def host(path="/proc/cpuinfo") -> dict:
    """The CPU as the records name it: vendor, model, notable ISA flags, logical CPUs."""
    info = _cpuinfo(path)
    return {"vendor": info["vendor"], "model": info["model"], "cpus": os.cpu_count(),
            "isa": [f for f in NOTABLE_FLAGS if f in info["flags"]]}


NO_NATIVE_BF16 = "this CPU has no AVX512_BF16 or AMX (bf16 only emulated)"  # why a bf16 run or test is left out


def native_bf16(path="/proc/cpuinfo") -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512_BF16 or AMX-BF16). Elsewhere the frameworks emulate
    it (oneDNN's reference kernels, Eigen): the same numbers, at up to minutes a step."""
    return bool({"avx512_bf16", "amx_bf16"} & set(host(path)["isa"]))


def host_key(extra: str = "", path="/proc/cpuinfo") -> str:
    info = _cpuinfo(path)
    text = "\0".join([info["vendor"], info["model"], " ".join(sorted(info["flags"])), str(os.cpu_count()), extra])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def package_version(name: str) -> str:
    """An installed distribution's version without importing it (a probe key must not start the framework)."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(os.environ.get("MODELZOO_TUNE_CACHE") or os.path.join(base, "modelzoo", "cputune"))


def record(name: str, choice: str, how: str, seconds: Optional[dict] = None, note: str = "") -> Decision:
    """Keep a decision made without a probe (the user's setting, a fixed rule) for the line and the record."""
    decision = Decision(name, str(choice), how, dict(seconds or {}), note)
    _decisions[name] = decision
    return decision


def _pick(seconds: dict, default: str) -> str:
    best = min(seconds, key=seconds.get)
    return best if seconds[best] < seconds[default] * (1 - MARGIN) else default


def _read_cache(path: Path, candidates) -> Optional[dict]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # absent or damaged (e.g. cut short by a full disk): measure again
    seconds = data.get("seconds") if isinstance(data, dict) else None
    if not isinstance(seconds, dict) or set(seconds) != set(candidates) \
            or not all(isinstance(v, (int, float)) for v in seconds.values()):
        return None
    return seconds


def _stale(path: Path) -> bool:
    """With ``$MODELZOO_RETUNE`` set, whether the cache entry at ``path`` was written before this job started
    (``$MODELZOO_START_TIME``, which the recipe scripts export to every rank, else this process's start)."""
    if os.environ.get(RETUNE, "0") in ("", "0"):
        return False
    from common.runrecord import start_time  # lazily: runrecord imports this module
    try:
        return path.stat().st_mtime < int(start_time())  # the scripts' start time has whole seconds
    except OSError:
        return False


def probe(name: str, candidates, measure: Callable[[str], float], default: str, key: str = "",
          rounds: int = 2) -> Decision:
    """Time ``measure(candidate)`` (seconds of one step; ``inf`` if it failed) for every candidate, cached.

    Returns (and keeps) the decision: the default unless another candidate is MARGIN faster.
    """
    candidates = list(candidates)
    if default not in candidates:
        raise ValueError(f"{name}: default {default!r} is not one of {candidates}")
    # the candidates are part of the key: a run that can offer fewer (no compiler for a kernel) has its own entry
    path = cache_dir() / f"{name}-{host_key(key + chr(0) + '|'.join(candidates))}.json"
    seconds = None if _stale(path) else _read_cache(path, candidates)
    how = "cached"
    if seconds is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.parent / f".{path.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another rank may be measuring: wait and read its result
            seconds = None if _stale(path) else _read_cache(path, candidates)
            if seconds is None:
                how = "probed"
                seconds = {c: float("inf") for c in candidates}
                for _ in range(rounds):  # alternate, so that a burst of load hits every candidate alike
                    for c in candidates:
                        seconds[c] = min(seconds[c], float(measure(c)))
                tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                tmp.write_text(json.dumps({"name": name, "key": key, "host": host(), "seconds": seconds,
                                           "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, indent=1))
                os.replace(tmp, path)
    decision = Decision(name, _pick(seconds, default), how, seconds)
    _decisions[name] = decision
    return decision


def probe_steps(name: str, candidates, prepare, default: str, key: str = "", rounds: int = 5,
                warmup: int = 1) -> Decision:
    """``probe`` for in-process candidates: ``prepare(candidate, stack)`` builds one step callable (cleanups go
    on the ExitStack ``stack``); steps of all candidates are then timed one after another, ``rounds`` times,
    so that load on a shared host hits every candidate alike. Nothing is built when the cache answers."""
    steps = {}
    with contextlib.ExitStack() as stack:
        def measure(c):
            if c not in steps:
                steps[c] = prepare(c, stack)
                for _ in range(warmup):
                    steps[c]()
            t0 = time.perf_counter()
            steps[c]()
            return time.perf_counter() - t0
        return probe(name, candidates, measure, default, key, rounds=rounds)


def run_probe_child(args, env_update: dict, timeout: float = 300, cwd=None) -> float:
    """Seconds a probe child measured (it prints ``MODELZOO_PROBE_SECONDS <s>``); inf if it failed or hung.

    A child process, for choices that must be made before a framework starts (environment variables such
    as oneDNN's ISA cap are read once, at its first kernel).
    """
    env = {**os.environ, **env_update}
    try:
        proc = subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return float("inf")
    for line in proc.stdout.splitlines():
        if line.startswith(PROBE_RESULT + " ") and proc.returncode == 0:
            return float(line.split()[1])
    return float("inf")


def time_steps(step: Callable[[], object], warmup: int = 1, repeat: int = 3) -> float:
    """Best wall time of one ``step()`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        step()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - t0)
    return best


def decisions() -> dict:
    return dict(_decisions)


def _describe(d: Decision) -> str:
    if d.how in ("probed", "cached") and len(d.seconds) > 1:
        timed = " vs ".join(f"{c} {s * 1e3:.1f} ms" if s != float("inf") else f"{c} failed"
                            for c, s in sorted(d.seconds.items(), key=lambda kv: kv[1]))
        return f"{d.name}={d.choice} ({d.how}: {timed})"
    return f"{d.name}={d.choice} ({d.how}{': ' + d.note if d.note else ''})"


def line() -> str:
    """``cpu tuning: <cpu>; name=choice (how: timings), ...`` for every decision of this process."""
    h = host()
    cpu = f"{h['model'] or h['vendor'] or 'unknown CPU'}, {h['cpus']} CPUs, {' '.join(h['isa']) or 'no AVX2'}"
    return "cpu tuning: " + cpu + "; " + ("; ".join(_describe(d) for d in _decisions.values()) or "no choices")


def announce(stream=None) -> str:
    text = line()
    print(text, file=stream or sys.stdout, flush=True)
    return text


def as_record() -> dict:
    """For the JSON run record: the host and every decision with its timings (inf written as null)."""
    def finite(s):
        return {c: (None if v == float("inf") else round(v, 6)) for c, v in s.items()}
    return {"host": host(), "choices": {n: {**asdict(d), "seconds": finite(d.seconds)} for n, d in _decisions.items()}}


def assert_reported(stdout: str, record: dict, names) -> None:
    """For the recipes' tests: the run printed one ``cpu tuning:`` line, and its JSON run record holds the
    same choices (each of ``names``, with the timings of every candidate where probed) and the CPU."""
    lines = [text for text in stdout.splitlines() if text.startswith("cpu tuning: ")]
    assert len(lines) == 1, lines
    tuning = record["cpu_tuning"]
    assert tuning["host"]["cpus"] >= 1 and tuning["host"]["model"] in lines[0], (tuning["host"], lines[0])
    for name in names:
        choice = tuning["choices"][name]
        assert f"{name}={choice['choice']} ({choice['how']}" in lines[0], (name, lines[0])
        if choice["how"] in ("probed", "cached"):
            assert len(choice["seconds"]) >= 2, choice
            for candidate, seconds in choice["seconds"].items():
                shown = "failed" if seconds is None else f"{seconds * 1e3:.1f} ms"
                assert f"{candidate} {shown}" in lines[0], (candidate, lines[0])
