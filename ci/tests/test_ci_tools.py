import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def build(out, *extra):
    subprocess.run([sys.executable, str(ROOT / "ci" / "make_data.py"), "--out", str(out), *extra], check=True,
                   capture_output=True)


def test_digits_dataset_is_deterministic_and_complete(tmp_path):
    build(tmp_path / "a")
    build(tmp_path / "b")
    assert tree_hash(tmp_path / "a") == tree_hash(tmp_path / "b")
    a = tmp_path / "a"
    assert sorted(p.name for p in (a / "cifar-10-batches-py").iterdir()) == [
        "batches.meta", "data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]
    assert sorted(p.name for p in (a / "cifar-100-python").iterdir()) == ["meta", "test", "train"]
    train = list((a / "imagenet" / "train").rglob("*.JPEG"))
    val = list((a / "imagenet" / "val").rglob("*.JPEG"))
    assert len(train) == 1497 and len(val) == 300
    assert len(list((a / "imagenet" / "train").iterdir())) == 10


def test_cifar_files_load_with_the_standard_reader_like_the_official_ones(tmp_path):
    import pickle
    import numpy as np
    build(tmp_path / "d", "--formats", "cifar10,cifar100")
    with open(tmp_path / "d" / "cifar-10-batches-py" / "data_batch_1", "rb") as fh:
        d = pickle.load(fh, encoding="latin1")
    assert set(d) == {"batch_label", "labels", "data", "filenames"}
    assert d["data"].dtype == np.uint8 and d["data"].shape[1] == 3072 and isinstance(d["labels"][0], int)
    with open(tmp_path / "d" / "cifar-100-python" / "train", "rb") as fh:
        t = pickle.load(fh, encoding="latin1")
    assert {"fine_labels", "coarse_labels", "data", "filenames", "batch_label"} == set(t)


def test_digits_images_are_real_digits_not_noise(tmp_path):
    # the class means must differ far more than noise would: a nearest-class-mean classifier on raw pixels
    import numpy as np
    from common.cifar import load_cifar10
    build(tmp_path / "d", "--formats", "cifar10")
    xtr, ytr, xte, yte, _ = load_cifar10(tmp_path / "d")
    means = np.stack([xtr[ytr == c].reshape((ytr == c).sum(), -1).mean(0) for c in range(10)])
    pred = np.argmin(((xte.reshape(len(xte), -1)[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    assert (pred == yte).mean() > 0.8


def test_noise_builder_sizes(tmp_path):
    build(tmp_path / "n", "--noise", "--n_train", "30", "--n_test", "7", "--formats", "imagenet")
    assert len(list((tmp_path / "n" / "imagenet" / "train").rglob("*.JPEG"))) == 30
    assert len(list((tmp_path / "n" / "imagenet" / "val").rglob("*.JPEG"))) == 7


def test_setup_failure_names_environment_and_package_and_leaves_nothing(tmp_path, monkeypatch):
    import setup_envs
    req = tmp_path / "requirements.txt"
    req.write_text("modelzoo-no-such-package==0.0.1\n")
    monkeypatch.setattr(setup_envs, "ROOT", tmp_path)
    monkeypatch.setattr(setup_envs, "ENVS", {"fake": (["requirements.txt"], [])})
    monkeypatch.setenv("MODELZOO_ENV_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MODELZOO_PIP_ARGS", "--no-index")
    with pytest.raises(setup_envs.SetupError) as exc:
        setup_envs.ensure("fake")
    msg = str(exc.value).splitlines()[0]
    assert "environment 'fake'" in msg and "modelzoo-no-such-package" in msg
    cache = tmp_path / "cache"
    assert not any(p.is_dir() for p in cache.iterdir())  # no half-built environment
    assert not (tmp_path / ".envs" / "fake").exists()


def test_setup_is_idempotent_and_keyed_by_requirements(tmp_path, monkeypatch):
    import setup_envs
    req = tmp_path / "requirements.txt"
    req.write_text("# nothing to install\n")
    monkeypatch.setattr(setup_envs, "ROOT", tmp_path)
    monkeypatch.setattr(setup_envs, "ENVS", {"fake": (["requirements.txt"], ["json"])})
    monkeypatch.setenv("MODELZOO_ENV_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MODELZOO_PIP_ARGS", "--no-index")
    monkeypatch.setattr(setup_envs, "read_requirements", lambda name: ([], []))
    key1 = setup_envs.env_key("fake")
    setup_envs.ensure("fake")
    link = tmp_path / ".envs" / "fake"
    assert link.is_symlink() and (link / ".modelzoo-complete").is_file()
    calls = []
    monkeypatch.setattr(setup_envs, "build", lambda *a: calls.append(a))
    setup_envs.ensure("fake")
    assert calls == []  # second run with unchanged requirements builds nothing
    monkeypatch.setattr(setup_envs, "read_requirements", lambda name: (["numpy"], []))
    assert setup_envs.env_key("fake") != key1


def test_bench_derives_overhead_mfu_and_pipeline_ratio():
    import bench
    recipe = {"images_per_sec": 95.0, "warmup_seconds": 3.0, "peak_rss_mb": 500.0}
    bare = {"batch_size": 64, "bare": {"images_per_sec": 100.0}, "pipeline": {"images_per_sec": 950.0},
            "flops_per_image_train": 2e9, "matmul_flops_per_sec": 400e9,
            "op_time": {"traced_steps": 3, "model_ops_share": 0.8, "top_ops": [["Conv2D", 0.5], ["Relu", 0.1]]}}
    d = bench.derive(recipe, bare)
    assert d["recipe_vs_bare"] == pytest.approx(0.95)
    assert d["mfu_recipe"] == pytest.approx(95 * 2e9 / 400e9) and d["mfu_bare"] == pytest.approx(0.5)
    assert d["pipeline_vs_model"] == pytest.approx(10.0)
    md = bench.markdown({"x": {"recipe": recipe, "bare": bare, "derived": d}}, "now")
    row = [line for line in md.splitlines() if line.startswith("| x |")][0]
    assert "| 95.0 | 100.0 | 95.0% | 950.0 | 10.0x | 2.000 | 400.0 | 47.5% | 3.0 | 500.0 |" in row
    # where the MFU goes: the model ops' share of op time, and their own rate (bare MFU 50% / 80%)
    assert ("convolutions and matmuls (with their gradients) 80.0%, so while they run they reach 62.5% of the "
            "matmul rate (bare-loop MFU 50.0% / 80.0%); largest: Conv2D 50.0%, Relu 10.0%") in md


def test_bench_gives_the_mfu_against_an_uncapped_matmul_beside_the_capped_one():
    """MindSpore runs capped at AVX2 (common/onednn.py), its MatMul too: the MFU column uses the capped rate, and
    the section says what the uncapped MatMul reaches and the MFU against it."""
    import bench
    recipe = {"images_per_sec": 10.0}
    bare = {"batch_size": 16, "bare": {"images_per_sec": 12.0}, "flops_per_image_train": 8e9,
            "matmul_flops_per_sec": 160e9, "matmul_flops_per_sec_uncapped": 320e9}
    d = bench.derive(recipe, bare)
    assert d["mfu_recipe"] == pytest.approx(0.5) and d["mfu_recipe_uncapped"] == pytest.approx(0.25)
    assert d["mfu_bare_uncapped"] == pytest.approx(0.3)
    md = bench.markdown({"x": {"recipe": recipe, "bare": bare, "derived": d}}, "now")
    assert "MatMul reaches 320.0 GFLOP/s" in md and "the MFU is 25.0% (recipe), 30.0% (bare loop)" in md
    del bare["matmul_flops_per_sec_uncapped"]
    assert "uncapped" not in str(bench.derive(recipe, bare)) and "MatMul reaches" not in bench.markdown(
        {"x": {"recipe": recipe, "bare": bare, "derived": bench.derive(recipe, bare)}}, "now")


def test_op_time_summary_counts_convolutions_matmuls_and_their_gradients():
    from ci.benchlib import op_time_summary
    per_type = {"_MklNativeConv2DBackpropFilter": 30.0, "MatMul": 20.0, "Conv2D": 10.0, "Pow": 25.0,
                "MaxPoolGrad": 10.0, "Relu": 5.0}
    s = op_time_summary(per_type, steps=2, top=3)
    assert s["traced_steps"] == 2 and s["model_ops_share"] == 0.6
    assert s["top_ops"] == [["_MklNativeConv2DBackpropFilter", 0.3], ["Pow", 0.25], ["MatMul", 0.2]]
    assert op_time_summary({}, steps=2) == {}


def test_bench_pools_the_windows_of_alternated_rounds():
    import bench
    # a slow round and a fast one: the pooled median sits between the rounds' own medians
    runs = [{"window_images_per_sec": [50.0, 52.0, 51.0], "peak_rss_mb": 900.0, "command": "first"},
            {"window_images_per_sec": [90.0, 91.0, 89.0], "peak_rss_mb": 800.0, "command": "second"}]
    res, median, pooled = bench.pool_rounds(runs, lambda r: r["window_images_per_sec"])
    assert sorted(pooled) == [50.0, 51.0, 52.0, 89.0, 90.0, 91.0] and median == pytest.approx(70.5)
    assert res["rounds"] == 2 and res["peak_rss_mb"] == 900.0 and "error" not in res
    assert res["command"] == "first"  # the command a reader re-runs is the first round's
    res, median, _ = bench.pool_rounds(runs + [{"error": "exit 1: boom"}], lambda r: r.get("window_images_per_sec"))
    assert res["error"] == "exit 1: boom" and median == pytest.approx(70.5)  # a failed round is reported
    assert bench.pool_rounds([{"error": "x"}], lambda r: None)[1] is None


def test_bench_pools_the_bare_loop_and_the_pipeline_over_the_rounds():
    import bench
    runs = [{"bare": {"images_per_sec": 10, "window_images_per_sec": [10, 11]},
             "pipeline": {"images_per_sec": 300, "window_images_per_sec": [300, 310]}},
            {"bare": {"images_per_sec": 20, "window_images_per_sec": [20, 21]},
             "pipeline": {"images_per_sec": 800, "window_images_per_sec": [790, 800]}}]
    res = bench.pool_bare(runs)
    assert res["bare"]["images_per_sec"] == 15.5 and res["rounds"] == 2
    assert res["pipeline"]["images_per_sec"] == 550 and res["pipeline"]["window_images_per_sec"] == [300, 310, 790, 800]
    assert res["pipeline"]["round_medians"] == [300, 800]
    assert bench.derive({"images_per_sec": 110}, res)["pipeline_vs_model"] == 5.0
    assert runs[0]["pipeline"]["images_per_sec"] == 300  # the rounds' own records are left as they were


def test_bench_reports_missing_figures_as_dashes_not_zeros():
    import bench
    d = bench.derive({"error": "exit 1"}, {"error": "exit 1"})
    assert d == {}
    md = bench.markdown({"y": {"recipe": {"error": "exit 1: boom"}, "bare": {}, "derived": d}}, "now")
    assert "| y | - | - | - |" in md and "recipe run error: exit 1: boom" in md


def test_bench_lists_each_optimisation_with_before_after_and_gpu_comparison():
    import bench
    res = {"resnet50_cifar_pt": {"recipe": {"images_per_sec": 30.0}, "bare": {}, "derived": {}, "optimisations": [
        {"change": "channels-last", "before": {"images_per_sec": 20.0, "command": "bash x.sh"}}]}}
    md = bench.markdown(res, "now", device="gpu")
    assert "| resnet50_cifar_pt | channels-last | 20.0 | 30.0 | 1.50x | `bash x.sh` |" in md
    # 30 img/s against the original's 390 img/s per card at batch 16
    assert "| resnet50_cifar_pt | 30.0 | 390 img/s at batch 16 per card (4,196 at batch 512) | 0.08x |" in md
    assert "Against the originals" not in bench.markdown(res, "now", device="cpu")
    shown = bench.shown([str(bench.ROOT / "ci" / "x.py"), f"--data={bench.ROOT}/data"])
    assert shown == "ci/x.py --data=data"  # commands as typed from the repository root


def test_bench_bf16_column_runs_the_precision_flag_only_where_the_cpu_has_bf16(monkeypatch, tmp_path):
    import bench
    from common import cputune
    ran = []
    monkeypatch.setattr(bench, "run_recipe", lambda name, spec, data, device, tag, env_over, extra:
                        ran.append((name, tag, extra)) or {"images_per_sec": 150.0, "command": "bash bf16.sh"})
    isa = ["avx2", "fma", "avx512f"]
    monkeypatch.setattr(cputune, "host", lambda path=None: {"isa": isa, "model": "M", "vendor": "V"})
    spec = bench.RECIPES["resnet50_cifar_pt"]
    assert "AVX512_BF16" in bench.run_bf16("resnet50_cifar_pt", spec, tmp_path, "cpu", "t")["skipped"] and not ran
    assert "MindSpore" in bench.run_bf16("sppnet_ms", bench.RECIPES["sppnet_ms"], tmp_path, "cpu", "t")["skipped"]
    isa.append("amx_bf16")
    bf = bench.run_bf16("resnet50_cifar_pt", spec, tmp_path, "cpu", "t")
    assert ran == [("resnet50_cifar_pt", "t", ["--amp"])] and bf["images_per_sec"] == 150.0
    assert cputune.native_bf16() and all(isinstance(s["bf16"], (list, str)) for s in bench.RECIPES.values())
    recipe = {"images_per_sec": 100.0}
    d = bench.derive(recipe, {}, None, bf)
    assert d["bf16_vs_fp32"] == pytest.approx(1.5)
    md = bench.markdown({"r": {"recipe": recipe, "bare": {}, "derived": d, "bf16": bf},
                         "s": {"recipe": recipe, "bare": {}, "derived": {}, "bf16": {"skipped": "no bf16 here"}}}, "now")
    rows = {line.split(" | ")[0]: line for line in md.splitlines() if line.startswith(("| r |", "| s |"))}
    assert rows["| r"].endswith("| 150.0 | 1.50x |") and rows["| s"].endswith("| - | - |")
    assert "- bf16 run (the recipe's precision flag, fp32 master weights): `bash bf16.sh`" in md
    assert "- bf16: no bf16 here" in md


def test_bench_names_the_cpu_and_keeps_an_earlier_hosts_figures_apart(monkeypatch):
    import bench
    from common import cputune
    monkeypatch.setattr(cputune, "host", lambda path="/proc/cpuinfo": {
        "vendor": "GenuineIntel", "model": "Intel(R) Xeon(R) Platinum 8480+", "cpus": 2,
        "isa": ["avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile"]})
    label = bench.machine_label()
    assert label.startswith("Intel(R) Xeon(R) Platinum 8480+ (GenuineIntel, ") and \
        "ISA: avx2 fma avx512f avx512_bf16 avx512_fp16 amx_tile)" in label
    res = {"x": {"recipe": {"images_per_sec": 30.0, "cpu_tuning": {"choices": {
        "onednn_isa": {"choice": "AVX2", "how": "probed", "seconds": {"ALL": 6.7, "AVX2": 0.057}, "note": ""}}}},
        "bare": {}, "derived": {}}}
    new = bench.markdown(res, "2026-12-01")
    assert "; machine: " + label in new
    assert "cpu tuning of the recipe run (common/cputune.py): onednn_isa=AVX2 (probed: ALL 6700.0 ms, AVX2 57.0 ms)" in new
    old = ("# Benchmarks\n\nProduced by `make bench` on 2026-11-29; machine: AMD EPYC (x86_64), 2 CPU cores, Python 3.11."
           "\n\n| recipe | img/s |\n|---|---|\n| x | 20.0 |\n\n## x\n\n- measured: 2026-11-29\n")
    merged = bench.with_earlier_hosts(new, old)
    assert merged.startswith(new) and merged.count("# Earlier hosts") == 1
    earlier = merged.split("# Earlier hosts", 1)[1]
    assert "## Benchmarks on an earlier host" in earlier and "machine: AMD EPYC (x86_64)" in earlier
    assert "| x | 20.0 |" in earlier and "\n### x\n" in earlier  # its headings one level down
    # the same machine again: the new run replaces the old one, the earlier hosts' sections stay
    again = bench.with_earlier_hosts(new.replace("30.0", "31.0"), merged)
    assert "| x | 20.0 |" in again and again.count("# Earlier hosts") == 1 and "31.0" in again
    assert bench.with_earlier_hosts(new, "") == new


def test_a_missing_tests_folder_fails_the_run(monkeypatch, capsys):
    from ci import run_tests
    monkeypatch.setitem(run_tests.SUITES, "gone", ("ci", "no_such_recipe/tests"))
    monkeypatch.setitem(run_tests.SUITES, "common", ("ci", "common/tests"))
    monkeypatch.setattr(run_tests, "run_suite", lambda name, real=run_tests.run_suite:
                        real(name) if name == "gone" else {"rc": 0, "seconds": 1.0, "passed": 3})
    assert run_tests.main(["common", "gone"]) == 1
    out = capsys.readouterr().out
    assert "no_such_recipe/tests is missing" in out and "| gone | 0 | 0 | 1 |" in out and "3 passed, 1 failed" in out


def test_the_npu_overlay_moves_the_torch_pins_and_adds_torch_npu():
    sys.path.insert(0, str(ROOT / "ci"))
    import setup_envs
    normal, late = setup_envs.read_requirements("torch-npu")
    plain, plain_late = setup_envs.read_requirements("torch")
    assert "torch==2.14.0" in normal and "torchvision==0.29.0" in normal and normal[-1] == "torch-npu==2.14.0"
    assert "torch==2.14.1" in plain and not any(s.startswith(("torch==2.14.0", "torch-npu")) for s in plain)
    # everything else as requirements.txt, in its order: the overlay replaces lines, it does not copy them
    assert [s for s in normal if not s.startswith(("torch", "torchvision"))] == \
        [s for s in plain if not s.startswith(("torch", "torchvision"))]
    assert late == plain_late == ["mmcv==1.7.2"]
    assert "torch-npu" in setup_envs.OPTIONAL and "torch-npu" in setup_envs.ENVS


def test_the_npu_environment_resolves_with_pip_and_the_plain_torch_pin_would_not(tmp_path, monkeypatch):
    """pip's resolver (metadata only, nothing installed) on the registry: the overlay's pins go together, and
    without the overlay's torch pin they conflict (torch_npu 2.14.0 requires torch==2.14.0.*)."""
    proc = subprocess.run([sys.executable, str(ROOT / "ci" / "setup_envs.py"), "--resolve-only", "torch-npu"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("setup: torch-npu resolves:"))
    assert "torch==2.14.0" in line and "torch-npu==2.14.0" in line and "torchvision==0.29.0" in line
    sys.path.insert(0, str(ROOT / "ci"))
    import setup_envs
    only_npu = tmp_path / "npu-only.txt"
    only_npu.write_text("torch-npu==2.14.0\n")
    monkeypatch.setattr(setup_envs, "OVERLAYS", {"torch-npu": str(only_npu)})
    with pytest.raises(setup_envs.SetupError, match="do not resolve together"):
        setup_envs.resolve("torch-npu")


def test_changed_jobs_pick_the_directories_a_change_touches():
    sys.path.insert(0, str(ROOT / "ci"))
    from changed_jobs import ALL, RECIPES, jobs_for
    assert jobs_for(["sppnet_ms/train.py", "sppnet_ms/README.md"]) == ["sppnet_ms"]
    assert jobs_for(["ci/bench.py"]) == ["ci"]
    assert jobs_for(["common/events.py"]) == [*RECIPES, "common", "ci"]
    assert jobs_for(["Makefile"]) == ALL and jobs_for(["ci/setup_envs.py"]) == ALL
    assert jobs_for(["README.md", "docs/x.md"]) == []


def test_every_ci_job_has_its_make_target():
    sys.path.insert(0, str(ROOT / "ci"))
    from changed_jobs import ALL, RECIPES
    import smoke
    assert list(smoke.SMOKES) == list(RECIPES) == list(smoke.ENVS)
    make = subprocess.run(["make", "-n", "-C", str(ROOT), *[f"smoke-{r}" for r in RECIPES], "test-common",
                           "test-ci"], capture_output=True, text=True)
    assert make.returncode == 0, make.stderr
    for r in RECIPES:
        assert f"ci/smoke.py {r}" in make.stdout and f"ci/setup_envs.py ci {smoke.ENVS[r]}" in make.stdout
    workflow = (ROOT / ".github" / "workflows" / "smoke.yml").read_text()
    assert "ci/changed_jobs.py" in workflow and 'make "smoke-${{ matrix.job }}"' in workflow
    assert set(ALL) == {*RECIPES, "common", "ci"}


def test_smoke_stops_a_recipe_at_its_first_failing_step_and_exits_1(tmp_path, monkeypatch, capsys):
    sys.path.insert(0, str(ROOT / "ci"))
    import smoke
    from common.banner import format_banner
    banner = f"print({format_banner(10.0, 0.1, 1, 0.5)!r})"
    py = sys.executable
    good = [("train", [py, "-c", banner + "; import pathlib; pathlib.Path('{out}/run').mkdir(); "
                       "pathlib.Path('{out}/run/r.json').write_text('{{}}')"], "run/r.json"),
            ("eval", [py, "-c", "import sys; print('evaluating'); sys.exit(3)"], None),
            ("export", [py, "-c", "open('{out}/never', 'w')"], "never")]
    monkeypatch.setattr(smoke, "SMOKES", {"fake": good})
    monkeypatch.setattr(smoke, "ENVS", {"fake": "ci"})
    monkeypatch.setattr(smoke, "OUT", tmp_path / "out")
    monkeypatch.setattr(smoke, "DATA", tmp_path)
    monkeypatch.setattr(smoke, "ROOT", tmp_path)
    (tmp_path / "fake").mkdir()
    assert smoke.main(["fake"]) == 1
    out = capsys.readouterr().out
    assert "smoke fake train: ok" in out and "smoke fake eval: FAILED: exit 3" in out and "evaluating" in out
    assert "smoke fake export" not in out and not (tmp_path / "out" / "fake" / "never").exists()


def test_ab_perf_summary_states_the_change_and_the_noise_of_each_side():
    from ci import ab_perf
    runs = [{"side": s, "images_per_sec": x} for s, x in (("old", 10.0), ("new", 9.0), ("new", 9.4), ("old", 10.4))]
    s = ab_perf.summarise(runs)
    assert s["old"] == [10.0, 10.4] and s["new"] == [9.0, 9.4]
    assert s["change"] == round(9.2 / 10.2 - 1, 4) and s["noise"] == round(0.4 / 9.2, 4)
    row = ab_perf.table({"r": {"summary": s}}).splitlines()[2]
    assert row == "| r | 10.00, 10.40 | 9.00, 9.40 | 10.20 | 9.20 | -9.8% | 4.3% |"
    with pytest.raises(SystemExit):
        ab_perf.main(["no_such_recipe", "--old", "HEAD"])
