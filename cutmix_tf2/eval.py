"""Evaluate a trained ResNet-20 CutMix model on the CIFAR-10 test batch (the original had no eval script).

With the same data and ``--eval_static`` it reproduces the ``Final Train Accuracy`` the training run
printed, which is the last epoch's test accuracy.

    python eval.py --data_dir=<cifar-10-batches-py or parent> --checkpoint=<output_path | model.h5 | epoch_NNNN>

``--checkpoint`` also takes a weights-only HDF5 file (``model.save_weights("x.h5")`` of the keras-io example or
the original's ``initial_weights.h5``): it is recognised by its content and loaded into this recipe's ResNet-20,
by layer name (keras-io's names) or, for a file whose names carry a later per-process number, by layer order.
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
                   help="training output folder, model.h5 (model.save), weights-only .h5 (model.save_weights, "
                        "e.g. keras-io's), SavedModel folder or checkpoints/epoch_NNNN")
    p.add_argument("--batch_size", type=cli.positive_int, default=32)
    p.add_argument("--eval_static", type=cli.str2bool, default=False,
                   help="True: drop the last partial batch, as training with --eval_static=True did")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu", "npu"])
    p.add_argument("--json", default=None, help="also write the result to this JSON file")
    p.add_argument("--predictions", default=None,
                   help="also write the model's outputs (softmax probabilities, one row per evaluated test image, "
                        "in file order) to this .npy file")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    _, _, x_test, y_test, _ = load_arrays(args.data_dir)  # numpy only: bad data fails before TensorFlow starts
    from src import checkpointing, device as dev, pipeline
    device = dev.select_device(args.device)
    info = {}
    model, source = checkpointing.load_model(args.checkpoint, info)
    ds = pipeline.test_dataset(x_test, one_hot(y_test), args.batch_size, drop_remainder=args.eval_static)
    loss, acc = model.evaluate(ds, verbose=0)
    n = len(x_test) - (len(x_test) % args.batch_size if args.eval_static else 0)
    how = f" (weights-only file, loaded by layer {info['weights_loaded_by']})" if info["weights_loaded_by"] else ""
    print(f"eval: {source}{how} on {n} test images ({device}): loss {loss:.4f} accuracy {acc:.4f}")
    print(f"Final Eval Accuracy : {acc:.4f}")
    if args.predictions:
        import numpy as np
        # the same batches as evaluate (the test set is not shuffled): row i is test image i
        np.save(args.predictions, model.predict(ds, verbose=0))
    if args.json:
        Path(args.json).write_text(json.dumps({"checkpoint": str(source), "images": n, "loss": loss,
                                               "accuracy": acc, "weights_loaded_by": info["weights_loaded_by"]},
                                              indent=2) + "\n")
    return 0


if __name__ == "__main__":
    cli.run(main, errors=ERRORS)
