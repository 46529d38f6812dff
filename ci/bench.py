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
 5. framework versions, thread settings and the exact commands;
 6. a "plain PyTorch" peer: the same architecture written plainly in eager PyTorch, with the recipe model's
    trainable parameter count, optimiser type and loss, trained on one fixed in-memory batch of the same size
    (ci/benchlib/peer_torch.py), in both memory formats (the faster one is its figure) -> what an ordinary
    PyTorch implementation reaches on this machine, beside the recipe's figure.

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

# "before" rows: the recipe re-run with one probed choice (common/cputune.py) forced to the other candidate, so that
# BENCHMARKS.md shows what each choice is worth on this host, whichever way its probe went. oneDNN's own ISA
# choice can take minutes a step for MindSpore's NCHW convolutions on AVX-512 CPUs, so that run is 2 steps.
MS_ONEDNN_BEFORE = ("oneDNN's own ISA choice (ONEDNN_MAX_CPU_ISA=ALL) against the level the probe chose (common/onednn.py); "
                    "before: 1 epoch of 2 steps", {"ONEDNN_MAX_CPU_ISA": "ALL"}, ["--train_epochs=1", "--train_steps=2"])
TF_ONEDNN_OFF = ("TensorFlow's oneDNN kernels off (TF_ENABLE_ONEDNN_OPTS=0), against the probe's choice "
                 "(common/tf_onednn.py)", {"TF_ENABLE_ONEDNN_OPTS": "0"}, [])
# bf16 on CPU (off by default there): each recipe's own precision flag. MindSpore 2.10's CPU backend has no
# bf16 Conv2D (its READMEs quote the error), so the two MindSpore recipes have none.
NO_MS_BF16 = "no bf16 on CPU: MindSpore 2.10's CPU Conv2D is float32 only"
# recipe -> environment, dataset format, synthetic data size, perf script arguments, "before" rows, bf16 flags
RECIPES = {
    "cspnet_tf1": {"env": "tf", "format": "cifar10", "n_train": 64 * 24, "args": ["--train_epochs=2", "--batch_size=64"],
                   "before": [TF_ONEDNN_OFF,
                              ("--conv_impl conv2d (the original's) against auto (probed on this host)",
                               {}, ["--conv_impl=conv2d"]),
                              ("--bn_impl fused (FusedBatchNorm + Mish ops) against auto (probed on this host)",
                               {}, ["--bn_impl=fused"]),
                              ("--bn_impl moments (the original's ops) against auto (probed on this host)",
                               {}, ["--bn_impl=moments"]),
                              ("--bn_impl kernel (compiled normalisation + Mish) against auto (probed on this host)",
                               {}, ["--bn_impl=kernel"])],
                   "bf16": ["--mixed_precision=on"]},
    "cutmix_tf2": {"env": "tf", "format": "cifar10", "n_train": 32 * 48, "args": ["--train_epochs=2", "--batch_size=32"],
                   "before": [TF_ONEDNN_OFF], "bf16": ["--precision_mode=allow_mix_precision"]},
    "resnet50_cifar_pt": {"env": "torch", "format": "cifar100", "n_train": 16 * 40,
                          "args": ["--train_epochs=1", "--batch_size=16"],
                          "before": [("--memory-format contiguous (the original's NCHW) against auto (probed)", {},
                                      ["--memory-format=contiguous"]),
                                     ("--memory-format channels_last against auto (probed)", {},
                                      ["--memory-format=channels_last"])],
                          "bf16": ["--amp"]},
    "sppnet_ms": {"env": "mindspore", "format": "imagenet", "n_train": 16 * 8, "args": ["--train_epochs=2", "--batch_size=16"],
                  "before": [MS_ONEDNN_BEFORE], "bf16": NO_MS_BF16},
    "tinydarknet_ms": {"env": "mindspore", "format": "imagenet", "n_train": 32 * 12,
                       "args": ["--train_epochs=2", "--batch_size=32"],
                       "before": [MS_ONEDNN_BEFORE,
                                  ("nn.LeakyReLU's maximum(0.2x, x) (--leaky_relu max, the original's) against "
                                   "auto (mix on CPU: 0.2x + 0.8 relu(x))", {}, ["--leaky_relu=max"]),
                                  ("nn.MaxPool2d (--max_pool nn, the original's) against auto (the compiled 2x2 "
                                   "pool where the probe finds it faster)", {}, ["--max_pool=nn"])],
                       "bf16": NO_MS_BF16},
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
               framework_version=r.get("framework_version"), params=r.get("params"),
               cpu_tuning=r.get("cpu_tuning"))
    return res


def run_benchlib(name: str, env_name: str, module_args: list, log: str, required: str, env_over=None) -> dict:
    """``python -m ci.benchlib.<module_args>`` in the environment ``env_name``: its BENCH_JSON object (an
    error entry when it failed or printed no ``required`` key), peak memory and the command; log in OUT/name."""
    py = ROOT / ".envs" / env_name / "bin" / "python"
    cmd = [sys.executable, "-c", MAXRSS_WRAPPER, str(py), "-m", *module_args]
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env_over or {})}
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    (OUT / name).mkdir(parents=True, exist_ok=True)
    (OUT / name / log).write_text(proc.stdout)
    res = {"command": shown(cmd[3:])}
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH_JSON:"):
            res.update(json.loads(line[len("BENCH_JSON:"):]))
        elif line.startswith("BENCH_MAXRSS_KB:"):
            res["peak_rss_mb"] = round(int(line.split(":")[1]) / 1024, 1)
    if proc.returncode != 0 or required not in res:
        res["error"] = f"exit {proc.returncode}: " + " | ".join(proc.stdout.strip().splitlines()[-3:])
    return res


def run_bare(name: str, spec: dict, data: Path, quick: bool) -> dict:
    args = [f"ci.benchlib.{name}", "--data", str(data)] + (["--quick"] if quick else [])
    return run_benchlib(name, spec["env"], args, "bare.log", "bare",
                        {"TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"})


def run_peer(name: str, spec: dict, quick: bool) -> dict:
    """The plain PyTorch peer of ``name``'s model (ci/benchlib/peer_torch.py), at the recipe run's batch size."""
    args = ["ci.benchlib.peer_torch", name]
    batch = [a.split("=", 1)[1] for a in spec["args"] if a.startswith("--batch_size=")]
    if batch:
        args += ["--batch_size", batch[-1]]
    return run_benchlib(name, "torch", args + (["--quick"] if quick else []), "peer.log", "peer")


def pool_peer(runs: list) -> dict:
    """The peer's rounds as one result: each memory format's windows pooled over the rounds (pool_rounds), and
    the faster format's pooled median as the peer's images/sec."""
    res, formats = None, {}
    for f in ("contiguous", "channels_last"):
        per_round = [p.get("formats", {}).get(f) or {} for p in runs]
        pooled_res, ips, windows = pool_rounds(runs, lambda p: (p.get("formats", {}).get(f) or {}).get(
            "window_images_per_sec"))
        res = res or pooled_res
        if ips:  # warm-up and window size as the first round that ran
            first = next(r for r in per_round if r.get("window_images_per_sec"))
            formats[f] = dict(first, images_per_sec=ips, window_images_per_sec=windows)
    if formats:
        best = max(formats, key=lambda f: formats[f]["images_per_sec"])
        res.update(formats=formats, best_format=best,
                   peer={"images_per_sec": formats[best]["images_per_sec"], "format": best})
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


def pool_bare(runs: list) -> dict:
    """The bare-loop rounds as one result: the bare step's windows and the input pipeline's windows each pooled
    over the rounds (pool_rounds). The pipeline was the first round's alone, and read 305 and 800 img/s for the
    same code an hour apart (page cache, host drift): the one column that was not alternated."""
    res, ips, windows = pool_rounds(runs, lambda b: b.get("bare", {}).get("window_images_per_sec"))
    if ips:
        res["bare"] = dict(res["bare"], images_per_sec=ips, window_images_per_sec=windows)
    _, ips, windows = pool_rounds(runs, lambda b: (b.get("pipeline") or {}).get("window_images_per_sec"))
    if ips:
        res["pipeline"] = dict(res["pipeline"], images_per_sec=ips, window_images_per_sec=windows,
                               round_medians=[(r.get("pipeline") or {}).get("images_per_sec") for r in runs])
    return res


def derive(recipe: dict, bare: dict, peer: dict | None = None, bf16: dict | None = None) -> dict:
    d = {}
    r_ips, b = recipe.get("images_per_sec"), bare.get("bare", {}).get("images_per_sec")
    if r_ips and (bf16 or {}).get("images_per_sec"):
        d["bf16_vs_fp32"] = bf16["images_per_sec"] / r_ips
    if r_ips and b:
        d["recipe_vs_bare"] = r_ips / b
    p_ips = (peer or {}).get("peer", {}).get("images_per_sec")
    if r_ips and p_ips:
        d["recipe_vs_plain_pytorch"] = r_ips / p_ips
    fl, mm = bare.get("flops_per_image_train"), bare.get("matmul_flops_per_sec")
    if fl and mm:
        if r_ips:
            d["mfu_recipe"] = fl * r_ips / mm
        if b:
            d["mfu_bare"] = fl * b / mm
    uncapped = bare.get("matmul_flops_per_sec_uncapped")
    if fl and uncapped:
        if r_ips:
            d["mfu_recipe_uncapped"] = fl * r_ips / uncapped
        if b:
            d["mfu_bare_uncapped"] = fl * b / uncapped
    p = bare.get("pipeline", {}).get("images_per_sec")
    if p and r_ips:
        d["pipeline_vs_model"] = p / r_ips
    return d


def run_bf16(name: str, spec: dict, data: Path, device: str, tag: str) -> dict:
    """The recipe's perf script in bf16 (its own precision flag, ``spec["bf16"]``), or why there is no such run:
    without bf16 in hardware the run would time the frameworks' emulation (cputune.native_bf16)."""
    from common import cputune
    if isinstance(spec["bf16"], str):
        return {"skipped": spec["bf16"]}
    if device == "cpu" and not cputune.native_bf16():
        return {"skipped": cputune.NO_NATIVE_BF16}
    return run_recipe(name, spec, data, device, tag, None, spec["bf16"])


def utc_now() -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def fmt(v, spec="{:.1f}"):
    return "-" if v is None else spec.format(v)


def machine_label() -> str:
    """Vendor, model and the ISA flags that decide kernels (AVX2 / AVX-512 / BF16 / FP16 / AMX), from /proc/cpuinfo."""
    from common import cputune
    h = cputune.host()
    return (f"{h['model'] or cpu_model()} ({h['vendor'] or 'unknown vendor'}, {platform.machine()}; ISA: "
            f"{' '.join(h['isa']) or 'none of ' + ' '.join(cputune.NOTABLE_FLAGS)}), {os.cpu_count()} CPU cores")


EARLIER = "# Earlier hosts"


def with_earlier_hosts(new: str, old: str) -> str:
    """``new`` followed by the figures of ``old`` (the previous BENCHMARKS.md) when they were measured on another
    machine: kept as a dated section of their own (headings one level down), never mixed with this run's."""
    def machine_of(text):
        for line in text.splitlines():
            if "; machine: " in line:
                return line.split("; machine: ", 1)[1].split(", Python", 1)[0]
        return None
    if not old.strip() or machine_of(old) == machine_of(new):
        kept = old.split(EARLIER, 1)[1] if EARLIER in old else ""
        return new + (f"\n\n{EARLIER}{kept}" if kept.strip() else "")
    head, _, earlier = old.partition(EARLIER)
    demoted = "\n".join("#" + line if line.startswith("#") else line for line in head.strip().splitlines())
    return f"{new}\n\n{EARLIER}\n\n{demoted.replace('## Benchmarks', '## Benchmarks on an earlier host', 1)}" \
           + (f"\n{earlier}" if earlier.strip() else "")


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


def tuning_text(tuning: dict) -> str:
    """A run record's cpu_tuning as one line: each choice, how it was made, and the probe's timings."""
    parts = []
    for name, c in tuning.get("choices", {}).items():
        timed = ", ".join(f"{k} {'failed' if v is None else f'{v * 1e3:.1f} ms'}" for k, v in c.get("seconds", {}).items())
        parts.append(f"{name}={c['choice']} ({c['how']}{': ' + timed if timed else ''}{'; ' + c['note'] if c.get('note') else ''})")
    return "; ".join(parts) or "no choices"


def peer_line(p: dict, recipe_params) -> str:
    """The peer's section line: command, both memory formats' figures and windows, and its parameter count
    against the recipe run's."""
    forms = p.get("formats", {})
    figures = "; ".join(f"{f} {fmt(forms[f].get('images_per_sec'))} img/s (windows: "
                        f"{forms[f].get('window_images_per_sec')})" for f in ("contiguous", "channels_last")
                        if f in forms)
    params = p.get("params")
    same = ("" if not (params and recipe_params) else
            "; the recipe run's: the same" if params == recipe_params else f"; the recipe run's: {recipe_params:,}")
    return (f"- plain PyTorch peer command: `{p.get('command', '-')}` (best format: {p.get('best_format', '-')}; "
            f"{figures or 'no figures'}); {p.get('framework_version', '')} threads {p.get('threads', '?')}; "
            f"{p.get('optimizer', '-')}, label smoothing {p.get('label_smoothing', '-')}; trainable params "
            + (f"{params:,}" if params else "-") + same
            + (f"; counted {p['flops_per_image_train'] / 1e9:.3f} GFLOP/img (train)" if p.get("flops_per_image_train")
               else ""))


def markdown(results: dict, started: str, device: str = "cpu") -> str:
    lines = ["# Benchmarks", "",
             f"Produced by `make bench` (`python ci/bench.py{' --device gpu' if device == 'gpu' else ''}`) on {started}; "
             f"machine: {machine_label()}, Python "
             f"{platform.python_version()}, recipes on {device}. Every figure below comes from that run "
             f"(with `--merge`, from the runs each recipe's section dates).",
             "Method: DESIGN.md section 9 and the docstring of `ci/bench.py`. images/sec are steady-state medians of "
             "timed windows (warm-up / compilation excluded and listed apart), pooled over the alternated rounds "
             "of recipe run, bare loop (and its input pipeline) and plain PyTorch peer each section lists (the machine's "
             "speed drifts over minutes; see pool_rounds in `ci/bench.py`). MFU = counted FLOPs per training "
             "image x images/sec / dense fp32 matmul FLOP/s measured in the same framework in the same run. "
             "plain PyTorch = the same architecture written plainly in eager PyTorch with the recipe model's "
             "trainable parameter count, optimiser type and loss, on one in-memory batch of the same size, in the "
             "faster of the two memory formats (contiguous, channels_last; `ci/benchlib/peer_torch.py`).", ""]
    lines += ["| recipe | batch | recipe img/s | bare loop img/s | recipe / bare | pipeline img/s | pipeline / model | "
              "GFLOP/img (train) | matmul GFLOP/s | MFU (recipe) | warm-up s | peak RSS MB | plain PyTorch img/s | "
              "recipe / plain PyTorch | bf16 img/s | bf16 / fp32 |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, res in results.items():
        r, b, d, p = res["recipe"], res["bare"], res["derived"], res.get("peer", {})
        lines.append("| " + " | ".join([
            name, str(b.get("batch_size", "-")), fmt(r.get("images_per_sec")), fmt(b.get("bare", {}).get("images_per_sec")),
            fmt(d.get("recipe_vs_bare"), "{:.1%}"), fmt(b.get("pipeline", {}).get("images_per_sec")),
            fmt(d.get("pipeline_vs_model"), "{:.1f}x"),
            fmt(b.get("flops_per_image_train") and b["flops_per_image_train"] / 1e9, "{:.3f}"),
            fmt(b.get("matmul_flops_per_sec") and b["matmul_flops_per_sec"] / 1e9),
            fmt(d.get("mfu_recipe"), "{:.1%}"), fmt(r.get("warmup_seconds")),
            fmt(max(r.get("peak_rss_mb") or 0, b.get("peak_rss_mb") or 0) or None),
            fmt(p.get("peer", {}).get("images_per_sec")), fmt(d.get("recipe_vs_plain_pytorch"), "{:.1%}"),
            fmt(res.get("bf16", {}).get("images_per_sec")), fmt(d.get("bf16_vs_fp32"), "{:.2f}x")]) + " |")
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
        r, b, p = res["recipe"], res["bare"], res.get("peer")
        lines += [f"## {name}", "", f"- measured: {res.get('measured', started)}; rounds (recipe run, then bare "
                  f"loop{', then plain PyTorch peer' if p else ''}): {r.get('rounds', 1)}",
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
        if b.get("matmul_flops_per_sec_uncapped"):
            dv = res["derived"]
            lines.append(f"- the matmul rate above is MindSpore's under the recipe's oneDNN ISA cap; without it the same "
                         f"MatMul reaches {fmt(b['matmul_flops_per_sec_uncapped'] / 1e9)} GFLOP/s (AVX-512 kernels, "
                         f"which MindSpore's convolutions cannot use: common/onednn.py), and against that rate the MFU "
                         f"is {fmt(dv.get('mfu_recipe_uncapped'), '{:.1%}')} (recipe), "
                         f"{fmt(dv.get('mfu_bare_uncapped'), '{:.1%}')} (bare loop)")
        if r.get("cpu_tuning"):
            lines.append("- cpu tuning of the recipe run (common/cputune.py): " + tuning_text(r["cpu_tuning"]))
        if p:
            lines.append(peer_line(p, r.get("params")))
        bf = res.get("bf16")
        if bf:
            lines.append(f"- bf16: {bf['skipped']}" if bf.get("skipped") else
                         f"- bf16 run (the recipe's precision flag, fp32 master weights): `{bf.get('command', '-')}` "
                         f"(windows img/s: {bf.get('window_images_per_sec', '-')})"
                         + (f"; error: {bf['error']}" if bf.get("error") else ""))
        if b.get("notes"):
            lines.append(f"- notes: {b['notes']}")
        for key in ("error",):
            if r.get(key):
                lines.append(f"- recipe run error: {r[key]}")
            if b.get(key):
                lines.append(f"- bare loop error: {b[key]}")
            if p and p.get(key):
                lines.append(f"- plain PyTorch peer error: {p[key]}")
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
        recipes, bares, peers, bf16s = [], [], [], []
        for i in range(1 if args.quick else args.rounds):
            recipes.append(run_recipe(name, spec, data, args.device, "recipe_run" + (f"_{i}" if i else "")))
            bf16s.append(run_bf16(name, spec, data, args.device, f"bf16_run_{i}"))
            bares.append(run_bare(name, spec, data, args.quick))
            peers.append(run_peer(name, spec, args.quick))
        recipe, ips, windows = pool_rounds(recipes, lambda r: r.get("window_images_per_sec"))
        if ips:
            recipe.update(images_per_sec=ips, window_images_per_sec=windows)
        bare = pool_bare(bares)
        peer = pool_peer(peers)
        bf16 = bf16s[0]
        if not bf16.get("skipped"):
            bf16, ips, windows = pool_rounds(bf16s, lambda r: r.get("window_images_per_sec"))
            if ips:
                bf16.update(images_per_sec=ips, window_images_per_sec=windows)
        before = []
        for i, (label, env_over, extra) in enumerate(spec["before"]):
            b = run_recipe(name, spec, data, args.device, f"before_{i}", env_over, extra)
            before.append({"change": label, "before": b})
        results[name] = {"recipe": recipe, "bare": bare, "peer": peer, "bf16": bf16,
                         "derived": derive(recipe, bare, peer, bf16), "optimisations": before, "measured": utc_now()}
        print(json.dumps(results[name]["derived"]), recipe.get("error", ""), bare.get("error", ""),
              peer.get("error", ""), flush=True)
    results = {n: results[n] for n in RECIPES if n in results}  # the usual order, merged or not
    (OUT / "bench.json").write_text(json.dumps(results, indent=2) + "\n")
    md = markdown(results, started, args.device)
    previous = Path(args.out).read_text() if Path(args.out).exists() else ""
    Path(args.out).write_text(with_earlier_hosts(md, previous) + "\n")
    print(md)
    return 1 if any(r["recipe"].get("error") or r["bare"].get("error") or r.get("peer", {}).get("error")
                    or r.get("bf16", {}).get("error") for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
