"""common.cputune: choices decided by timings on this host, cached per host, measured once by concurrent ranks,
re-measured when the cache is damaged, and reported in the `cpu tuning:` line and the run record."""
import json
import multiprocessing
import sys

import pytest

from common import cputune, runrecord
from common.throughput import ThroughputMeter
from common.runrecord import finish_run


@pytest.fixture(autouse=True)
def _fresh(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELZOO_TUNE_CACHE", str(tmp_path / "tune"))
    monkeypatch.setattr(cputune, "_decisions", {})


class Counting:
    def __init__(self, times):
        self.times, self.calls = times, []

    def __call__(self, candidate):
        self.calls.append(candidate)
        return self.times[candidate]


def test_the_fastest_candidate_wins_only_by_the_margin():
    d = cputune.probe("layout", ["nchw", "nhwc"], Counting({"nchw": 1.0, "nhwc": 0.5}), default="nchw")
    assert (d.choice, d.how, d.seconds) == ("nhwc", "probed", {"nchw": 1.0, "nhwc": 0.5})
    d = cputune.probe("threads", ["2", "1"], Counting({"2": 1.0, "1": 0.95}), default="2")
    assert d.choice == "2"  # 5% faster is within the noise margin: the default stays
    d = cputune.probe("broken", ["a", "b"], Counting({"a": float("inf"), "b": 2.0}), default="a")
    assert d.choice == "b"  # a candidate that failed (inf) never wins


def test_every_candidate_is_timed_alternately_and_the_best_round_counts():
    rounds = iter([3.0, 1.0, 0.5, 2.0])  # a, b, a, b
    calls = []

    def measure(c):
        calls.append(c)
        return next(rounds)
    d = cputune.probe("x", ["a", "b"], measure, default="a", rounds=2)
    assert calls == ["a", "b", "a", "b"] and d.seconds == {"a": 0.5, "b": 1.0} and d.choice == "a"


def test_a_second_run_reads_the_cache_and_a_new_key_measures_again(tmp_path):
    first = Counting({"a": 1.0, "b": 0.2})
    cputune.probe("x", ["a", "b"], first, default="a", key="v1")
    again = Counting({"a": 0.1, "b": 5.0})
    d = cputune.probe("x", ["a", "b"], again, default="a", key="v1")
    assert again.calls == [] and (d.choice, d.how) == ("b", "cached")
    d = cputune.probe("x", ["a", "b"], again, default="a", key="v2")  # e.g. a new framework version
    assert again.calls and (d.choice, d.how) == ("a", "probed")
    files = list((tmp_path / "tune").glob("x-*.json"))
    assert len(files) == 2 and all(json.loads(f.read_text())["host"]["cpus"] for f in files)


def test_a_damaged_cache_entry_is_measured_again(tmp_path):
    cputune.probe("x", ["a", "b"], Counting({"a": 1.0, "b": 0.2}), default="a")
    (entry,) = (tmp_path / "tune").glob("x-*.json")
    for damage in ('{"seconds": {"a": 1.0', '{"seconds": {"a": 1.0}}', '["not", "a", "dict"]', ""):
        entry.write_text(damage)
        again = Counting({"a": 0.1, "b": 5.0})
        d = cputune.probe("x", ["a", "b"], again, default="a")
        assert again.calls and (d.choice, d.how) == ("a", "probed"), damage
        assert json.loads(entry.read_text())["seconds"] == {"a": 0.1, "b": 5.0}


def test_retune_measures_a_choice_cached_before_the_job_again_once(tmp_path, monkeypatch):
    """A choice cached by a probe on a busy host: MODELZOO_RETUNE=1 measures it again in the next job, and the
    job's later probes (its other ranks, its next processes) read the new entry."""
    import os
    import time
    cputune.probe("x", ["a", "b"], Counting({"a": 1.0, "b": 0.2}), default="a")  # measured under load: b
    (entry,) = (tmp_path / "tune").glob("x-*.json")
    os.utime(entry, (time.time() - 3600, time.time() - 3600))  # an hour ago
    monkeypatch.setenv("MODELZOO_START_TIME", str(int(time.time()) - 60))  # this job began a minute ago
    monkeypatch.setenv("MODELZOO_RETUNE", "1")
    quiet = Counting({"a": 0.1, "b": 0.5})
    d = cputune.probe("x", ["a", "b"], quiet, default="a")
    assert quiet.calls and (d.choice, d.how) == ("a", "probed")
    later = Counting({"a": 9.0, "b": 0.1})
    d = cputune.probe("x", ["a", "b"], later, default="a")
    assert later.calls == [] and (d.choice, d.how) == ("a", "cached")
    monkeypatch.setenv("MODELZOO_RETUNE", "0")
    os.utime(entry, (time.time() - 3600, time.time() - 3600))
    assert cputune.probe("x", ["a", "b"], later, default="a").how == "cached" and later.calls == []


def _rank(log, cache, out):
    import os
    import time
    os.environ["MODELZOO_TUNE_CACHE"] = cache

    def measure(c):
        with open(log, "a") as f:
            f.write(c + "\n")
        time.sleep(0.2)  # long enough that an unlocked second rank would start measuring too
        return {"a": 1.0, "b": 0.2}[c]
    d = cputune.probe("x", ["a", "b"], measure, default="a")
    with open(out, "w") as f:
        f.write(d.choice + " " + d.how)


def test_concurrent_ranks_measure_once(tmp_path):
    log, cache = tmp_path / "measured", str(tmp_path / "tune")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_rank, args=(log, cache, tmp_path / f"out{i}")) for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert log.read_text().split() == ["a", "b", "a", "b"]  # one rank's two rounds, nobody else's
    outs = sorted((tmp_path / f"out{i}").read_text() for i in range(3))
    assert outs == ["b cached", "b cached", "b probed"]


def test_a_probe_child_reports_its_seconds_and_failures_are_inf(tmp_path):
    ok = tmp_path / "ok.py"
    ok.write_text(f"import os\nprint('noise')\nprint('{cputune.PROBE_RESULT}', float(os.environ['T']))\n")
    assert cputune.run_probe_child([str(ok)], {"T": "0.25"}) == 0.25
    bad = tmp_path / "bad.py"
    bad.write_text(f"print('{cputune.PROBE_RESULT} 0.1')\nraise SystemExit(3)\n")
    assert cputune.run_probe_child([str(bad)], {}) == float("inf")
    hang = tmp_path / "hang.py"
    hang.write_text("import time\ntime.sleep(30)\n")
    assert cputune.run_probe_child([str(hang)], {}, timeout=1) == float("inf")


def test_the_line_and_the_run_record_name_the_cpu_and_every_choice(tmp_path):
    cputune.probe("onednn_isa", ["ALL", "AVX2"], Counting({"ALL": 6.7, "AVX2": float("inf")}), default="ALL")
    cputune.record("threads", 2, "rule", note="all cores")
    text = cputune.line()
    assert text.startswith("cpu tuning: ") and f"{cputune.host()['cpus']} CPUs" in text
    assert "onednn_isa=ALL (probed: ALL 6700.0 ms vs AVX2 failed)" in text
    assert "threads=2 (rule: all cores)" in text
    meter = ThroughputMeter(batch_size=4, warmup_steps=0)
    meter.record(0.5)
    rec = finish_run(output_dir=tmp_path, network="n", case="c", framework="f", framework_version="1", device="cpu",
                     rank_size=1, batch_size=4, params=1, epochs=1, meter=meter, accuracy=0.5, loss=0.1, seed=0,
                     spec=runrecord.CaseLogSpec(runrecord.KEYS_LOSS_FIRST, "global", "sec_per_step", "{case}_loss.txt"),
                     stream=sys.stderr)
    saved = json.loads((tmp_path / "c.json").read_text())["cpu_tuning"]
    assert saved == json.loads(json.dumps(rec["cpu_tuning"]))
    assert saved["choices"]["onednn_isa"]["seconds"] == {"ALL": 6.7, "AVX2": None}
    assert saved["choices"]["threads"] == {"name": "threads", "choice": "2", "how": "rule", "seconds": {},
                                           "note": "all cores"}
    assert saved["host"]["model"] == cputune.host()["model"]


def test_host_reads_vendor_model_and_isa_flags(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("vendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
                    "flags\t\t: fpu avx2 fma avx512f avx512_bf16 avx512_fp16 amx_tile amx_bf16 avx512fx\n")
    h = cputune.host(info)
    assert (h["vendor"], h["model"]) == ("GenuineIntel", "Intel(R) Xeon(R) Platinum 8480+")
    assert h["isa"] == ["avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16"]
    assert cputune.host_key("", info) != cputune.host_key("", tmp_path / "missing")


def test_native_bf16_needs_avx512_bf16_or_amx_bf16(tmp_path):
    flags = {"zen3": "fpu avx2 fma", "zen4": "fpu avx2 fma avx512f avx512_bf16", "amx": "fpu avx2 amx_tile amx_bf16",
             "skylake": "fpu avx2 fma avx512f avx512bw avx512_vnni"}
    got = {}
    for name, f in flags.items():
        (tmp_path / name).write_text(f"vendor_id\t: X\nmodel name\t: {name}\nflags\t\t: {f}\n")
        got[name] = cputune.native_bf16(tmp_path / name)
    assert got == {"zen3": False, "zen4": True, "amx": True, "skylake": False}


def test_in_process_steps_are_built_once_timed_alternately_and_cleaned_up():
    built, ran, closed = [], [], []

    def prepare(c, stack):
        built.append(c)
        stack.callback(closed.append, c)
        return lambda: ran.append(c)
    d = cputune.probe_steps("x", ["a", "b"], prepare, default="a", rounds=3, warmup=1)
    assert built == ["a", "b"] and closed == ["b", "a"]
    assert ran == ["a", "a", "b", "b", "a", "b", "a", "b"]  # warm-up with the build, then alternating
    assert d.how == "probed" and set(d.seconds) == {"a", "b"}
    again = cputune.probe_steps("x", ["a", "b"], prepare, default="a")
    assert again.how == "cached" and built == ["a", "b"]  # the cache answered: nothing built
