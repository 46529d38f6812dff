#!/usr/bin/env python3
"""`make bench`: measure every recipe side by side and write BENCHMARKS.md + bench_output/bench.json.

Per recipe, in one run:
 1. the recipe's real training path (its own `test/train_performance_1p.sh`) on synthetic data of the
    real shape (noise in the real file format) -> steady-state images/sec (median of timed windows from
    the run record; warm-up / graph compilation reported apart) and the peak resident memory;
 2. the same model's bare step loop in the same framework (forward, backward, optimiser update; fixed
    in-memory batch, no input pipeline, no logging) -> the recipe's overhead ratio;
 3. FLOPs per training image (counted: see each benchlib module) x images/sec against the dense
    matmul rate measured in the same framework and run -> model FLOP utilisation (MFU);
 4. the input pipeline alone (decode + augment + batch) -> its images/sec against the model's rate;
 5. framework versions, thread settings and the exact commands.

    python ci/bench.py [recipe ...] [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench_output"
sys.path.insert(0, str(ROOT))

# the MindSpore recipes' oneDNN ISA cap (common/onednn.py), lifted; without it a step can take minutes on an
# AVX-512 CPU, so this "before" run is one epoch of 2 steps (the first is warm-up); elsewhere it changes nothing
MS_ONEDNN_BEFORE = ("oneDNN capped at AVX2 on AVX-512 CPUs (common/onednn.py), against oneDNN's own choice "
                    "(ONEDNN_MAX_CPU_ISA=ALL), which runs MindSpore's NCHW convolutions on its reference kernel; "
                    "before: 1 epoch of 2 steps", {"ONEDNN_MAX_CPU_ISA": "ALL"}, ["--train_epochs=1", "--train_steps=2"])
# recipe -> environment, dataset format, synthetic data size, perf script arguments, and "before": the
# settings each optimisation replaced, re-run in the same bench run so that every change has its before/after
RECIPES = {
    "cspnet_tf1": {"env": "tf", "format": "cifar10", "n_train": 64 * 24, "args": ["--train_epochs=2", "--batch_size=64"],
                   "before": [("oneDNN kernels on (TF_ENABLE_ONEDNN_OPTS=1; TF's default is off on AMD CPUs)",
                               {"TF_ENABLE_ONEDNN_OPTS": "0"}, []),
                              ("1x1 kernels and 3x3 kernels on <=2x2 maps as matmuls (--conv_impl auto -> matmul)",
                               {}, ["--conv_impl=conv2d"]),
                              ("batch-axis normalisation + Mish as one compiled CPU kernel (--bn_impl auto -> "
                               "kernel), against FusedBatchNorm + the Mish ops (--bn_impl fused)", {}, ["--bn_impl=fused"]),
                              ("batch-axis normalisation + Mish as one compiled CPU kernel (--bn_impl auto -> "
                               "kernel), against the original's moments + Mish ops", {}, ["--bn_impl=moments"])]},
    "cutmix_tf2": {"env": "tf", "format": "cifar10", "n_train": 32 * 48, "args": ["--train_epochs=2", "--batch_size=32"],
                   "before": [("oneDNN kernels on (TF_ENABLE_ONEDNN_OPTS=1; TF's default is off on AMD CPUs)",
                               {"TF_ENABLE_ONEDNN_OPTS": "0"}, [])]},
    "resnet50_cifar_pt": {"env": "torch", "format": "cifar100", "n_train": 16 * 40,
                          "args": ["--train_epochs=1", "--batch_size=16"], "before": []},
    "sppnet_ms": {"env": "mindspore", "format": "imagenet", "n_train": 16 * 8, "args": ["--train_epochs=2", "--batch_size=16"],
                  "before": [MS_ONEDNN_BEFORE]},
    "tinydarknet_ms": {"env": "mindspore", "format": "imagenet", "n_train": 32 * 12,
                       "args": ["--train_epochs=2", "--batch_size=32"],
                       "before": [MS_ONEDNN_BEFORE,
                                  ("LeakyReLU(0.2) as 0.2x + 0.8 relu(x) (--leaky_relu mix), against nn.LeakyReLU's "
                                   "maximum(0.2x, x) (--leaky_relu max)", {}, ["--leaky_relu=max"])]},
}
# what the originals report on their accelerators (shared/reference/originals.md), as images/sec per card
ORIGINAL_GPU = {
    "cspnet_tf1": (1245.0, "1,245 img/s (GPU, batch 64)"),
    "resnet50_cifar_pt": (390.0, "390 img/s at batch 16 per card (4,196 at batch 512)"),
    "sppnet_ms": (256 / 0.087, "~87 ms/step at batch 256 on an RTX 3090"),
    "tinydarknet_ms": (128 / 0.104, "104 ms/step at batch 128 per card"),
}
MAXRSS_WRAPPER = ("import resource,subprocess,sys\n"
                  "rc=subprocess.call(sys.argv[1:])\n"
                  "print('BENCH_MAXRSS_KB:%d' % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
                  "sys.exit(rc)")


def shown(cmd) -> str:
    """A command as a user would type it from the repository root (no path of this machine)."""
    return " ".join(shlex.quote(str(c).replace(str(ROOT) + os.sep, "")) for c in cmd)


def synthetic_data(fmt: str, n_train: int) -> Path:
    out = OUT / "data" / f"{fmt}_{n_train}"
    cmd = [sys.executable, str(ROOT / "ci" / "make_data.py"), "--noise", "--out", str(out), "--formats", fmt,
           "--n_train", str(n_train), "--n_test", "64", "--imagenet_size", "320"]
    subprocess.run(cmd, check=True, capture_output=True)
    return out


def run_recipe(name: str, spec: dict, data: Path, device: str, tag: str = "recipe_run", env_over=None,
               extra=()) -> dict:
    """The recipe's own perf script; ``env_over``/``extra`` reproduce a setting an optimisation replaced."""
    out = OUT / name / tag
    shutil.rmtree(out, ignore_errors=True)  # a stale run record must never be read as this run's
    script = ROOT / name / "test" / "train_performance_1p.sh"
    cmd = [sys.executable, "-c", MAXRSS_WRAPPER, "bash", str(script), f"--data_path={data}",
           f"--output_path={out}", f"--device={device}", *spec["args"], *extra]
    env = {**os.environ, **(env_over or {})}
    t0 = time.time()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    (OUT / name).mkdir(parents=True, exist_ok=True)
    (OUT / name / f"{tag}.log").write_text(proc.stdout)
    prefix = "".join(f"{k}={v} " for k, v in (env_over or {}).items())
    res = {"command": prefix + shown(cmd[3:]), "wall_seconds": round(time.time() - t0, 1)}
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH_MAXRSS_KB:"):
            res["peak_rss_mb"] = round(int(line.split(":")[1]) / 1024, 1)
    if proc.returncode != 0:
        res["error"] = f"exit {proc.returncode}: " + " | ".join(proc.stdout.strip().splitlines()[-3:])
        return res
    recs = []
    for p in sorted(out.glob("*.json")):
        try:  # other JSON files live beside the run record (mmcv's JSON-lines log, for one)
            r = json.loads(p.read_text())
        except ValueError:
            continue
        if isinstance(r, dict) and "images_per_sec" in r:
            recs.append(r)
    if not recs:
        res["error"] = "no run record written"
        return res
    r = recs[-1]
    res.update(images_per_sec=r.get("median_window_images_per_sec") or r["images_per_sec"],
               mean_images_per_sec=r["images_per_sec"], warmup_seconds=r.get("warmup_seconds"),
               window_images_per_sec=r.get("window_images_per_sec"), framework=r.get("framework"),
               framework_version=r.get("framework_version"), params=r.get("params"))
    return res


def run_bare(name: str, spec: dict, data: Path, quick: bool) -> dict:
    py = ROOT / ".envs" / spec["env"] / "bin" / "python"
    cmd = [sys.executable, "-c", MAXRSS_WRAPPER, str(py), "-m", f"ci.benchlib.{name}", "--data", str(data)]
    if quick:
        cmd.append("--quick")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    if spec["env"] == "tf":
        # both TF recipes' train.py turn oneDNN on; the bare loop must run the same kernels
        env.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    (OUT / name).mkdir(parents=True, exist_ok=True)
    (OUT / name / "bare.log").write_text(proc.stdout)
    res = {"command": shown(cmd[3:])}
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH_JSON:"):
            res.update(json.loads(line[len("BENCH_JSON:"):]))
        elif line.startswith("BENCH_MAXRSS_KB:"):
            res["peak_rss_mb"] = round(int(line.split(":")[1]) / 1024, 1)
    if proc.returncode != 0 or "bare" not in res:
        res["error"] = f"exit {proc.returncode}: " + " | ".join(proc.stdout.strip().splitlines()[-3:])
    return res


def pool_rounds(runs: list, windows_of) -> dict:
    """Several alternated rounds as one result: the median of every timed window of every round.

    Why: this machine's speed drifts by tens of percent over minutes, so a recipe run and a bare loop
    measured a few minutes apart can differ by that much for no reason of their own; alternating them
    (recipe, bare, recipe, bare, ...) and pooling the windows exposes both to the same drift.
    """
    res = dict(runs[0])  # the first round's command and figures; images/sec from the pooled windows
    pooled = [w for r in runs for w in (windows_of(r) or [])]
    res["rounds"] = len(runs)
    for r in runs:
        if r.get("error"):
            res["error"] = r["error"]
    rss = [r.get("peak_rss_mb") for r in runs if r.get("peak_rss_mb")]
    if rss:
        res["peak_rss_mb"] = max(rss)
    return res, (statistics.median(pooled) if pooled else None), pooled


def derive(recipe: dict, bare: dict) -> dict:
    d = {}
    r_ips, b = recipe.get("images_per_sec"), bare.get("bare", {}).get("images_per_sec")
    if r_ips and b:
        d["recipe_vs_bare"] = r_ips / b
    fl, mm = bare.get("flops_per_image_train"), bare.get("matmul_flops_per_sec")
    if fl and mm:
        if r_ips:
            d["mfu_recipe"] = fl * r_ips / mm
        if b:
            d["mfu_bare"] = fl * b / mm
    p = bare.get("pipeline", {}).get("images_per_sec")
    if p and r_ips:
        d["pipeline_vs_model"] = p / r_ips
    return d


def utc_now() -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def fmt(v, spec="{:.1f}"):
    return "-" if v is None else spec.format(v)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def optimisation_rows(results: dict) -> list:
    """One row per optimisation: the recipe with the setting it replaced (before) vs today's default (after)."""
    rows = []
    for name, res in results.items():
        after = res["recipe"].get("images_per_sec")
        for opt in res.get("optimisations", []):
            before = opt["before"].get("images_per_sec")
            gain = after / before if after and before else None
            rows.append(f"| {name} | {opt['change']} | {fmt(before)} | {fmt(after)} | {fmt(gain, '{:.2f}x')} | "
                        f"`{opt['before'].get('command', '-')}`" + (f" (error: {opt['before']['error']})"
                                                                     if opt["before"].get("error") else "") + " |")
    return rows


def markdown(results: dict, started: str, device: str = "cpu") -> str:
    lines = ["# Benchmarks", "",
             f"Produced by `make bench` (`python ci/bench.py{' --device gpu' if device == 'gpu' else ''}`) on {started}; "
             f"machine: {cpu_model()} ({platform.machine()}), {os.cpu_count()} CPU cores, Python "
             f"{platform.python_version()}, recipes on {device}. Every figure below comes from that run "
             f"(with `--merge`, from the runs each recipe's section dates).",
             "Method: DESIGN.md section 9 and the docstring of `ci/bench.py`. images/sec are steady-state medians of "
             "timed windows (warm-up / compilation excluded and listed apart), pooled over the alternated rounds "
             "of recipe run and bare loop each section lists (the machine's speed drifts over minutes; see "
             "pool_rounds in `ci/bench.py`). MFU = counted FLOPs per training "
             "image x images/sec / dense fp32 matmul FLOP/s measured in the same framework in the same run.", ""]
    lines += ["| recipe | batch | recipe img/s | bare loop img/s | recipe / bare | pipeline img/s | pipeline / model | "
              "GFLOP/img (train) | matmul GFLOP/s | MFU (recipe) | warm-up s | peak RSS MB |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, res in results.items():
        r, b, d = res["recipe"], res["bare"], res["derived"]
        lines.append("| " + " | ".join([
            name, str(b.get("batch_size", "-")), fmt(r.get("images_per_sec")), fmt(b.get("bare", {}).get("images_per_sec")),
            fmt(d.get("recipe_vs_bare"), "{:.1%}"), fmt(b.get("pipeline", {}).get("images_per_sec")),
            fmt(d.get("pipeline_vs_model"), "{:.1f}x"),
            fmt(b.get("flops_per_image_train") and b["flops_per_image_train"] / 1e9, "{:.3f}"),
            fmt(b.get("matmul_flops_per_sec") and b["matmul_flops_per_sec"] / 1e9),
            fmt(d.get("mfu_recipe"), "{:.1%}"), fmt(r.get("warmup_seconds")),
            fmt(max(r.get("peak_rss_mb") or 0, b.get("peak_rss_mb") or 0) or None)]) + " |")
    lines.append("")
    rows = optimisation_rows(results)
    if rows:
        lines += ["## Optimisations, before and after (same run)", "",
                  "Each row re-runs the recipe's perf script with the setting an optimisation replaced.", "",
                  "| recipe | change | before img/s | after img/s | speed-up | before command |", "|---|---|---|---|---|---|",
                  *rows, ""]
    if device == "gpu":
        lines += ["## Against the originals' reported figures", "", "| recipe | ours img/s | original | ours / original |",
                  "|---|---|---|---|"]
        for name, res in results.items():
            ref = ORIGINAL_GPU.get(name)
            ours = res["recipe"].get("images_per_sec")
            if ref:
                lines.append(f"| {name} | {fmt(ours)} | {ref[1]} | {fmt(ours and ours / ref[0], '{:.2f}x')} |")
        lines.append("")
    for name, res in results.items():
        r, b = res["recipe"], res["bare"]
        lines += [f"## {name}", "", f"- measured: {res.get('measured', started)}; rounds (recipe run, then bare "
                  f"loop): {r.get('rounds', 1)}",
                  f"- framework: {b.get('framework', r.get('framework', '?'))} {b.get('framework_version', r.get('framework_version', ''))}; "
                  f"threads: {b.get('threads', '?')}",
                  f"- FLOPs method: {b.get('flops_method', '-')}",
                  f"- recipe command: `{r.get('command', '-')}` (windows img/s: {r.get('window_images_per_sec', '-')})",
                  f"- bare loop / pipeline command: `{b.get('command', '-')}` (windows img/s: "
                  f"{b.get('bare', {}).get('window_images_per_sec', '-')})"]
        op_time, mfu_bare = b.get("op_time"), res["derived"].get("mfu_bare")
        if op_time and op_time.get("model_ops_share"):
            share = op_time["model_ops_share"]
            lines.append(f"- op time of the bare step by type ({op_time['traced_steps']} traced steps): convolutions and "
                         f"matmuls (with their gradients) {share:.1%}"
                         + (f", so while they run they reach {mfu_bare / share:.1%} of the matmul rate (bare-loop "
                            f"MFU {mfu_bare:.1%} / {share:.1%})" if mfu_bare else "")
                         + "; largest: " + ", ".join(f"{k} {v:.1%}" for k, v in op_time.get("top_ops", [])))
        if b.get("notes"):
            lines.append(f"- notes: {b['notes']}")
        for key in ("error",):
            if r.get(key):
                lines.append(f"- recipe run error: {r[key]}")
            if b.get(key):
                lines.append(f"- bare loop error: {b[key]}")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Benchmark every recipe; writes BENCHMARKS.md")
    ap.add_argument("recipes", nargs="*", default=list(RECIPES))
    ap.add_argument("--quick", action="store_true", help="fewer timed windows (smoke test of the harness)")
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    ap.add_argument("--merge", action="store_true",
                    help="keep the other recipes' results of the last run (bench_output/bench.json) and replace "
                         "only these; each recipe's section says when it was measured")
    ap.add_argument("--rounds", type=int, default=2,
                    help="alternate the recipe run and the bare loop this many times and pool their windows "
                         "(1 with --quick)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "gpu"],
                    help="device of the recipe runs; gpu adds the originals' reported figures beside ours")
    args = ap.parse_args(argv)
    unknown = [r for r in args.recipes if r not in RECIPES]
    if unknown:
        ap.error(f"unknown recipe(s) {unknown}")
    if args.rounds < 1:
        ap.error("--rounds must be >= 1")
    OUT.mkdir(exist_ok=True)
    started = utc_now()
    results = {}
    if args.merge and (OUT / "bench.json").exists():
        results = json.loads((OUT / "bench.json").read_text())
    for name in args.recipes:
        spec = RECIPES[name]
        print(f"=== bench {name}", flush=True)
        data = synthetic_data(spec["format"], spec["n_train"])
        recipes, bares = [], []
        for i in range(1 if args.quick else args.rounds):
            recipes.append(run_recipe(name, spec, data, args.device, "recipe_run" + (f"_{i}" if i else "")))
            bares.append(run_bare(name, spec, data, args.quick))
        recipe, ips, windows = pool_rounds(recipes, lambda r: r.get("window_images_per_sec"))
        if ips:
            recipe.update(images_per_sec=ips, window_images_per_sec=windows)
        bare, ips, windows = pool_rounds(bares, lambda b: b.get("bare", {}).get("window_images_per_sec"))
        if ips:
            bare["bare"] = dict(bare["bare"], images_per_sec=ips, window_images_per_sec=windows)
        before = []
        for i, (label, env_over, extra) in enumerate(spec["before"]):
            b = run_recipe(name, spec, data, args.device, f"before_{i}", env_over, extra)
            before.append({"change": label, "before": b})
        results[name] = {"recipe": recipe, "bare": bare, "derived": derive(recipe, bare), "optimisations": before,
                         "measured": utc_now()}
        print(json.dumps(results[name]["derived"]), recipe.get("error", ""), bare.get("error", ""), flush=True)
    results = {n: results[n] for n in RECIPES if n in results}  # the usual order, merged or not
    (OUT / "bench.json").write_text(json.dumps(results, indent=2) + "\n")
    md = markdown(results, started, args.device)
    Path(args.out).write_text(md + "\n")
    print(md)
    return 1 if any(r["recipe"].get("error") or r["bare"].get("error") for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
