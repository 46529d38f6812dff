#!/usr/bin/env python3
"""`make smoke` / `make smoke-<recipe>`: one short training, evaluation and export per recipe on the digits data.

    python ci/smoke.py [recipe ...]      (default: all five; needs `make setup data`)

Each recipe runs its own entry points the way its README shows them: the 1-device performance script for a few
steps, then the evaluation entry on the checkpoint it saved, then the export entry. A step passes when it
exits 0 and leaves what it promises (the banner and the JSON run record; the exported file). Meant for CI per
directory (`.github/workflows/smoke.yml` runs one recipe per job when its folder or common/ changes): a broken
entry point shows within minutes, long before the full `make test`. Outputs go to `smoke_output/<recipe>/`.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from common.banner import parse_banner  # noqa: E402

DATA = ROOT / "data" / "digits"
OUT = ROOT / "smoke_output"
ENVS = {"cspnet_tf1": "tf", "cutmix_tf2": "tf", "resnet50_cifar_pt": "torch", "sppnet_ms": "mindspore",
        "tinydarknet_ms": "mindspore"}
R50_CONFIG = "configs/resnet/resnet50_8xb16_cifar100_perf.py"

# recipe -> steps: (name, argv, file the step must leave). In argv: {py} the recipe's interpreter, {data} the
# digits root, {out} the recipe's output folder, {glob:PATTERN} the newest match of PATTERN under {out}.
# Settings are the recipes' own test-suite ones (tiny batches, a few steps), not the demo's.
SMOKES = {
    "cspnet_tf1": [
        ("train", ["bash", "test/train_performance_1p.sh", "--data_path={data}", "--output_path={out}/run",
                   "--train_epochs=1", "--train_steps=4", "--batch_size=16", "--device=cpu", "--seed=0",
                   "--DISPLAY_STEP=1"], "run/cspdarknet53.ckpt.index"),
        ("eval", ["{py}", "test.py", "--CKPT_PATH={out}/run/cspdarknet53.ckpt", "--CIFAR_PATH={data}",
                  "--batch_size=100"], None),
        ("export", ["{py}", "export.py", "--CKPT_PATH={out}/run", "--output_dir={out}/export", "--CIFAR_PATH={data}",
                    "--batch_size=16"], "export/cspdarknet53.onnx"),
    ],
    "cutmix_tf2": [
        ("train", ["bash", "test/train_performance_1p.sh", "--data_path={data}", "--output_path={out}/run",
                   "--train_epochs=1", "--train_steps=8", "--batch_size=8", "--device=cpu"], None),
        ("eval", ["{py}", "eval.py", "--data_dir={data}", "--checkpoint={out}/run", "--eval_static=True"], None),
        ("export", ["{py}", "export.py", "--checkpoint={out}/run", "--output_dir={out}/export", "--data_dir={data}"],
         "export"),
    ],
    "resnet50_cifar_pt": [
        ("train", ["bash", "test/train_performance_1p.sh", "--data_path={data}", "--output_path={out}/run",
                   "--batch_size=8", "--train_epochs=1", "--train_steps=4", "--device=cpu", "--seed=0",
                   "--cfg-options=data.workers_per_gpu=0", "--cfg-options=data.val.max_samples=48"],
         "run/latest.pth"),
        ("eval", ["{py}", "tools/test.py", R50_CONFIG, "{out}/run/latest.pth", "--data-path", "{data}",
                  "--cfg-options", "data.workers_per_gpu=0", "data.test.max_samples=48"], None),
        ("export", ["{py}", "tools/export.py", R50_CONFIG, "{out}/run/latest.pth", "--output-file",
                    "{out}/r50.onnx"], "r50.onnx"),
    ],
    "sppnet_ms": [
        ("train", ["bash", "test/train_performance_1p.sh", "--data_path={data}", "--output_path={out}/run",
                   "--batch_size=16", "--train_steps=10", "--device=cpu", "--train_model=zfnet", "--image_size=56",
                   "--vet_images=false"], "run/ckpt/best.ckpt"),
        ("eval", ["{py}", "eval.py", "--test_model=zfnet", "--data_path={data}/imagenet",
                  "--ckpt_path={out}/run/ckpt/best.ckpt", "--device_target=CPU", "--batch_size=16",
                  "--vet_images=false"], None),
        ("export", ["{py}", "export.py", "--ckpt_file={out}/run/ckpt/best.ckpt", "--export_model=zfnet",
                    "--file_format=ONNX", "--file_name={out}/zfnet", "--batch_size=2", "--device_target=CPU"],
         "zfnet.onnx"),
    ],
    "tinydarknet_ms": [
        ("train", ["bash", "test/train_performance_1p.sh", "--data_path={data}", "--output_path={out}/run",
                   "--batch_size=16", "--train_steps=4", "--device=cpu", "--num_classes=10", "--image_size=32",
                   "--num_parallel_workers=1"], None),
        ("eval", ["{py}", "eval.py", "--data_path={data}/imagenet",
                  "--checkpoint_path={glob:run/checkpoints/0/*.ckpt}", "--batch_size=32", "--device_target=CPU",
                  "--num_classes=10", "--image_size=32", "--num_parallel_workers=1"], None),
        ("export", ["{py}", "export.py", "--checkpoint_path={glob:run/checkpoints/0/*.ckpt}", "--num_classes=10",
                    "--image_size=32", "--batch_size=16", "--file_name={out}/tdn", "--file_format=ONNX",
                    "--device_target=CPU"], "tdn.onnx"),
    ],
}


class SmokeError(RuntimeError):
    pass


def fill(arg: str, recipe: str, out: Path) -> str:
    arg = (arg.replace("{py}", str(ROOT / ".envs" / ENVS[recipe] / "bin" / "python"))
           .replace("{data}", str(DATA)).replace("{out}", str(out)))
    if arg.count("{glob:"):
        head, rest = arg.split("{glob:", 1)
        pattern, tail = rest.split("}", 1)
        found = sorted(out.glob(pattern), key=lambda p: p.stat().st_mtime)
        if not found:
            raise SmokeError(f"{out / pattern}: nothing matches (the training step saved no checkpoint)")
        arg = head + str(found[-1]) + tail
    return arg


def env(recipe: str) -> dict:
    e = dict(os.environ)
    e.update(PYTHONPATH=os.pathsep.join([str(ROOT), e.get("PYTHONPATH", "")]), MPLBACKEND="Agg",
             MZ_PYTHON=str(ROOT / ".envs" / ENVS[recipe] / "bin" / "python"))
    if ENVS[recipe] == "tf":
        e.update(TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    return e


def smoke(recipe: str) -> list:
    """Run one recipe's steps; returns [(step, seconds, problem or None)], stopping at the first failure."""
    out = OUT / recipe
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    results = []
    for name, argv, leaves in SMOKES[recipe]:
        t0 = time.time()
        log = out / f"{name}.log"
        try:
            cmd = [fill(a, recipe, out) for a in argv]
            print(f"\n=== smoke {recipe} {name}: {' '.join(cmd)}", flush=True)
            with open(log, "w") as fh:
                rc = subprocess.call(cmd, cwd=ROOT / recipe, env=env(recipe), stdout=fh, stderr=subprocess.STDOUT)
            text = log.read_text(errors="replace")
            if rc != 0:
                raise SmokeError(f"exit {rc} (log {log}): " + " | ".join(text.strip().splitlines()[-3:]))
            if name == "train":
                parse_banner(text)  # raises when the "Final result" banner is missing or incomplete
                if not list(out.glob("run/**/*.json")):
                    raise SmokeError(f"{out / 'run'}: no JSON run record written")
            if leaves and not (out / leaves).exists():
                raise SmokeError(f"{out / leaves}: missing after the step")
            problem = None
        except (SmokeError, ValueError) as exc:
            problem = " ".join(str(exc).split())
        results.append((name, time.time() - t0, problem))
        print(f"=== smoke {recipe} {name}: {'ok' if problem is None else 'FAILED: ' + problem} "
              f"({results[-1][1]:.0f} s)", flush=True)
        if problem:
            break
    return results


def main(argv) -> int:
    names = argv or list(SMOKES)
    unknown = [n for n in names if n not in SMOKES]
    if unknown:
        print(f"smoke: unknown recipe(s) {unknown}; known: {list(SMOKES)}", file=sys.stderr)
        return 2
    if not DATA.is_dir():
        print(f"smoke: {DATA} is missing: run `make data` first", file=sys.stderr)
        return 2
    table, failed = [], 0
    for recipe in names:
        results = smoke(recipe)
        failed += any(p for _, _, p in results) or len(results) < len(SMOKES[recipe])
        table.append((recipe, results))
    print("\n| recipe | train s | eval s | export s | result |\n|---|---|---|---|---|")
    for recipe, results in table:
        secs = {n: f"{s:.0f}" for n, s, _ in results}
        problem = next((f"{n}: {p}" for n, _, p in results if p), "ok")
        print(f"| {recipe} | {secs.get('train', '-')} | {secs.get('eval', '-')} | {secs.get('export', '-')} | "
              f"{problem} |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
