#!/usr/bin/env python3
"""`make demo`: train every recipe briefly on the embedded digits data and summarise.

Runs each recipe's own `test/train_full_1p.sh` (the entry point users run) with a short schedule,
prints every "Final result" banner, then one summary table (model, framework, device, params,
images/sec, accuracy, duration) and writes `demo_output/summary.md` and `demo_output/curves.png`
(the recipes' per-epoch curves side by side), and copies the table and the PNG to `docs/` where the
README shows them. A recipe whose directory has no script yet is listed as not there. Exits non-zero
if any recipe that exists failed.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from common.banner import parse_banner  # noqa: E402

DATA = ROOT / "data" / "digits"
OUT = ROOT / "demo_output"
# recipe -> (script, arguments); short schedules chosen so the whole demo stays under 20 minutes on 2 cores
DEMOS = {
    # batch 16 instead of 64: four times the updates for the same compute (0.63 after one epoch)
    "cspnet_tf1": ("test/train_full_1p.sh", ["--train_epochs=1", "--batch_size=16", "--seed=0", "--DISPLAY_STEP=31"]),
    # batch 8: at the original's 32 the 1,497 digits give 47 steps an epoch and BN's moving averages lag
    "cutmix_tf2": ("test/train_full_1p.sh", ["--train_epochs=3", "--batch_size=8"]),
    # 2 epochs at batch 32 with a short warm-up (from the zero-initialised residual start, lr 0.1 at once
    # swings the head); no flip, the digits are not mirror-symmetric. ~12 img/s: ResNet-50 is the slow one.
    "resnet50_cifar_pt": ("test/train_full_1p.sh", ["--train_epochs=2", "--batch_size=32",
                                                    "--cfg-options=optimizer.lr=0.1", "--cfg-options=lr_config.warmup=linear",
                                                    "--cfg-options=lr_config.warmup_iters=20",
                                                    "--cfg-options=lr_config.warmup_ratio=0.1",
                                                    "--cfg-options=data.train.pipeline.1.flip_prob=0.0"]),
    # ZFNet at 56 px with He init, no augmentation or dropout: the original's N(0, 0.01) init barely moves
    # in a two-minute run (see sppnet_ms/README.md); every flag here is an opt-in of the recipe
    "sppnet_ms": ("test/train_full_1p.sh", ["--train_epochs=2", "--train_steps=30", "--batch_size=16", "--device=cpu",
                                            "--train_model=zfnet", "--image_size=56", "--init=he", "--keep_prob=1",
                                            "--augment=false", "--warmup_epochs=0", "--lr_init=0.01",
                                            "--vet_images=false"]),
    # 32 px inputs, lr 0.01 (the original's 0.1 assumes a global batch of 1024), 10 classes
    "tinydarknet_ms": ("test/train_full_1p.sh", ["--train_epochs=3", "--batch_size=16", "--lr_init=0.01",
                                                 "--num_classes=10", "--image_size=32"]),
}


def run(recipe: str, script: str, args) -> dict:
    path = ROOT / recipe / script
    if not path.is_file():
        print(f"\n=== {recipe}: not there yet ({recipe}/{script} missing)", flush=True)
        return {"recipe": recipe, "status": "not there yet"}
    out = OUT / recipe
    cmd = ["bash", str(path), f"--data_path={DATA}", f"--output_path={out}", *args]
    print(f"\n=== {recipe}: {' '.join(cmd[1:])}", flush=True)
    t0 = time.time()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env={**os.environ, "MPLBACKEND": "Agg"})
    dur = time.time() - t0
    text = proc.stdout
    (OUT / f"{recipe}.log").write_text(text)
    result = {"recipe": recipe, "duration": dur, "status": "ok" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"}
    try:
        banner = parse_banner(text)
        start = text.rfind("------------------ Final result")
        print(text[start:].strip(), flush=True)
    except ValueError:
        print("\n".join(text.splitlines()[-25:]), flush=True)
        result["status"] = result["status"] if proc.returncode else "FAILED (no banner)"
        return result
    result.update(banner)
    records = []
    for p in sorted(out.glob("*.json")):  # the run record; other JSON there (mmcv's JSON-lines log) is skipped
        try:
            r = json.loads(p.read_text())
        except ValueError:
            continue
        if isinstance(r, dict) and "images_per_sec" in r:
            records.append(r)
    if records:
        rec = records[-1]
        result.update(framework=f"{rec.get('framework', '?')} {rec.get('framework_version', '')}".strip(),
                      device=rec.get("device", "?"), params=rec.get("params"))
    csvs = sorted(out.rglob("summary.csv"))
    if csvs:
        result["csv"] = str(csvs[0])
    return result


def table(results) -> str:
    head = "| model | framework | device | params | images/sec | accuracy | duration s | status |\n|---|---|---|---|---|---|---|---|"
    rows = []
    for r in results:
        params = f"{r['params'] / 1e6:.2f}M" if r.get("params") else "-"
        ips = f"{r['images_per_sec']:.1f}" if "images_per_sec" in r else "-"
        acc = f"{r['accuracy']:.4f}" if "accuracy" in r else "-"
        dur = f"{r['duration']:.0f}" if "duration" in r else "-"
        rows.append(f"| {r['recipe']} | {r.get('framework', '-')} | {r.get('device', '-')} | {params} | {ips} | {acc} | {dur} | {r['status']} |")
    return head + "\n" + "\n".join(rows)


def main(argv) -> int:
    only = argv or list(DEMOS)
    OUT.mkdir(exist_ok=True)
    if not (DATA / "cifar-10-batches-py" / "test_batch").is_file():
        print(f"demo: {DATA} missing: run `make data`", file=sys.stderr)
        return 2
    t0 = time.time()
    results = [run(name, *DEMOS[name]) for name in only]
    md = table(results)
    print("\n=== Summary (digits data, this machine)\n" + md)
    print(f"demo: total {time.time() - t0:.0f} s")
    (OUT / "summary.md").write_text(md + "\n")
    with_csv = [r for r in results if r.get("csv")]
    if with_csv:
        from common.summary import plot_curves
        png = plot_curves([r["csv"] for r in with_csv], OUT / "curves.png", title="make demo: digits data",
                          labels=[r["recipe"] for r in with_csv])
        print(f"demo: curves of {len(with_csv)} recipe(s) in {png}")
    if not argv:  # a full demo refreshes what the README shows
        docs = ROOT / "docs"
        docs.mkdir(exist_ok=True)
        (docs / "demo_summary.md").write_text(md + "\n")
        if with_csv:
            (docs / "demo_curves.png").write_bytes((OUT / "curves.png").read_bytes())
    failed = [r["recipe"] for r in results if r["status"].startswith("FAILED")]
    if failed:
        print(f"demo: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
