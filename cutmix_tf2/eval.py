"""Evaluate a trained ResNet-20 CutMix model on the CIFAR-10 test batch (the original had no eval script).

With the same data and ``--eval_static`` it reproduces the ``Final Train Accuracy`` the training run
printed, which is the last epoch's test accuracy.

    python eval.py --data_dir=<cifar-10-batches-py or parent> --checkpoint=<output_path | model.h5 | epoch_NNNN>
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
RECIPE_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(RECIPE_DIR))
if str(RECIPE_DIR.parent) not in sys.path:
    sys.path.insert(1, str(RECIPE_DIR.parent))

from common.tf_onednn import choose_tf_onednn_opts  # noqa: E402

choose_tf_onednn_opts()  # the same kernels as train.py on this host (TensorFlow reads the setting at import)
from common import cli  # noqa: E402
from common.checkpoint import CheckpointError  # noqa: E402
from common.cifar import DatasetError  # noqa: E402
from src.data import load_arrays, one_hot  # noqa: E402

ERRORS = (CheckpointError, DatasetError)  # one "ERROR: ..." line and exit 2 (common.cli)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--data_dir", required=True, help="cifar-10-batches-py folder, or a folder that contains it")
    p.add_argument("--checkpoint", required=True,
                   help="training output folder, model.h5, SavedModel folder or checkpoints/epoch_NNNN")
    p.add_argument("--batch_size", type=cli.positive_int, default=32)
    p.add_argument("--eval_static", type=cli.str2bool, default=False,
                   help="True: drop the last partial batch, as training with --eval_static=True did")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu", "npu"])
    p.add_argument("--json", default=None, help="also write the result to this JSON file")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    _, _, x_test, y_test, _ = load_arrays(args.data_dir)  # numpy only: bad data fails before TensorFlow starts
    from src import checkpointing, device as dev, pipeline
    device = dev.select_device(args.device)
    model, source = checkpointing.load_model(args.checkpoint)
    ds = pipeline.test_dataset(x_test, one_hot(y_test), args.batch_size, drop_remainder=args.eval_static)
    loss, acc = model.evaluate(ds, verbose=0)
    n = len(x_test) - (len(x_test) % args.batch_size if args.eval_static else 0)
    print(f"eval: {source} on {n} test images ({device}): loss {loss:.4f} accuracy {acc:.4f}")
    print(f"Final Eval Accuracy : {acc:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"checkpoint": str(source), "images": n, "loss": loss,
                                               "accuracy": acc}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    cli.run(main, errors=ERRORS)
