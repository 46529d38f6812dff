"""Evaluate a checkpoint written by tools/train.py (mmcls ``tools/test.py``, single process).

    python tools/test.py CONFIG CHECKPOINT [--metrics accuracy] [--data-path DIR] [--out results.json]

Prints ``accuracy_top-1`` / ``accuracy_top-5`` (percent, as mmcls logs them) and ``Eval Accuracy`` (top-1
as a fraction, the figure of the training banner). The checkpoint is read with ``weights_only=True``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

RECIPE = Path(__file__).resolve().parents[1]
for p in (RECIPE, RECIPE.parent):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from common import cli  # noqa: E402
from mmcls_ext.cli import ERRORS  # noqa: E402


def parse_args(argv=None):
    from mmcv import DictAction
    parser = argparse.ArgumentParser(description="Evaluate a classifier checkpoint (mmcls config)")
    parser.add_argument("config", help="test config file path")
    parser.add_argument("checkpoint", help="checkpoint file (epoch_N.pth / latest.pth)")
    parser.add_argument("--out", help="write the metrics as JSON to this file")
    parser.add_argument("--metrics", nargs="+", default=["accuracy"],
                        help="evaluation metrics: accuracy, precision, recall, f1_score, support")
    parser.add_argument("--metric-options", nargs="+", action=DictAction, default={},
                        help="e.g. topk=1,5 for accuracy")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction,
                        help="override settings in the config, key=value pairs")
    parser.add_argument("--data-path", help="cifar-100-python folder or a folder holding it")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "gpu", "npu"])
    parser.add_argument("--gpu-id", type=int, default=0, help="id of the device to use")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    return evaluate(parse_args(argv))


def evaluate(args) -> int:
    from mmcv.runner import load_checkpoint
    from mmcls.apis import single_gpu_test
    from mmcls.datasets import build_dataloader, build_dataset
    from mmcls.models import build_classifier
    from mmcls.utils import wrap_non_distributed_model

    import mmcls_ext  # noqa: F401  (CIFAR100Local, weights_only checkpoint loader)
    from common.checkpoint import atomic_write_text
    from mmcls_ext.checkpoint import safe_load
    from mmcls_ext.cli import load_config
    from mmcls_ext.device import resolve_device, set_local_device

    cfg = load_config(args.config, args.cfg_options)
    if args.data_path:
        cfg.data.test.data_prefix = args.data_path
    device = resolve_device(args.device)
    set_local_device(device, args.gpu_id)

    dataset = build_dataset(cfg.data.test, dict(test_mode=True))
    safe_load(args.checkpoint)  # fail with the file's name before building anything else
    loader = build_dataloader(dataset, samples_per_gpu=int(cfg.data.samples_per_gpu), workers_per_gpu=0,
                              dist=False, shuffle=False, round_up=False, pin_memory=False,
                              persistent_workers=False)
    model = build_classifier(cfg.model)
    ckpt = load_checkpoint(model, args.checkpoint, map_location="cpu")
    model.CLASSES = ckpt.get("meta", {}).get("CLASSES", dataset.CLASSES)
    model = wrap_non_distributed_model(model, device, device_ids=[args.gpu_id])
    outputs = single_gpu_test(model, loader)
    results = dataset.evaluate(outputs, args.metrics, args.metric_options)
    for k, v in results.items():
        print(f"{k} : {float(v):.4f}")
    if "accuracy_top-1" in results:
        print(f"Eval Accuracy : {float(results['accuracy_top-1']) / 100:.4f}")
    if args.out:
        record = {"checkpoint": str(Path(args.checkpoint).resolve()), "config": str(Path(args.config).resolve()),
                  "num_images": len(dataset), **{k: float(v) for k, v in results.items()}}
        atomic_write_text(args.out, json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    cli.run(main, errors=ERRORS)
