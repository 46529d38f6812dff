"""Export a trained model: HDF5 (the original's model format), SavedModel and ONNX, each reloaded and checked.

    python export.py --checkpoint=<output_path | model.h5 | epoch_NNNN> --output_dir=export [--data_dir=...]

The check feeds the same batch (test images when --data_dir is given, else seeded random inputs) to the
Keras model and to each reloaded export; the largest absolute difference of the softmax outputs must be
under --atol, or the script exits non-zero.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
RECIPE_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(RECIPE_DIR))
if str(RECIPE_DIR.parent) not in sys.path:
    sys.path.insert(1, str(RECIPE_DIR.parent))

from common.checkpoint import CheckpointError, atomic_write, atomic_write_dir  # noqa: E402
from common.cifar import DatasetError  # noqa: E402
from src.data import load_arrays  # noqa: E402

NAME = "cutmix_resnet20"
# HDF5 is the original's model format: keep it without tf-keras' "legacy format" warning on every run
warnings.filterwarnings("ignore", message="You are saving your model as an HDF5 file")


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--checkpoint", required=True,
                   help="training output folder, model.h5, SavedModel folder or checkpoints/epoch_NNNN")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--data_dir", default=None, help="take the check batch from this CIFAR-10 test set")
    p.add_argument("--opset", type=int, default=13)
    p.add_argument("--atol", type=float, default=1e-5)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import numpy as np
    try:
        if args.data_dir:
            x = load_arrays(args.data_dir)[2][:32].astype(np.float32) / 255.0
        else:
            x = np.random.default_rng(0).random((8, 32, 32, 3), dtype=np.float32)
    except DatasetError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    import tensorflow as tf
    import tf_keras as keras
    from src import checkpointing
    try:
        model, source = checkpointing.load_model(args.checkpoint)
    except CheckpointError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    out = Path(args.output_dir)
    want = model.predict(x, verbose=0)

    h5 = atomic_write(out / f"{NAME}.h5", lambda tmp: model.save(tmp, save_format="h5", include_optimizer=False))
    sm = atomic_write_dir(out / "saved_model", lambda tmp: model.save(tmp, save_format="tf", include_optimizer=False))

    import tf2onnx
    import onnxruntime as ort

    spec = (tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name="input"),)

    def to_onnx(tmp):
        tf2onnx.convert.from_keras(model, input_signature=spec, opset=args.opset, output_path=tmp)
    onnx_path = atomic_write(out / f"{NAME}.onnx", to_onnx)

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = {
        "h5": keras.models.load_model(str(h5), compile=False).predict(x, verbose=0),
        "saved_model": keras.models.load_model(str(sm), compile=False).predict(x, verbose=0),
        "onnx": session.run(None, {session.get_inputs()[0].name: x})[0],
    }
    worst = 0.0
    for kind, y in got.items():
        diff = float(np.max(np.abs(y - want)))
        worst = max(worst, diff)
        print(f"export: {kind:12s} max |diff| vs Keras = {diff:.3g}")
    print(f"export: {source} -> {h5}, {sm}, {onnx_path}")
    if worst > args.atol:
        print(f"ERROR: exported model differs from Keras by {worst:.3g} > --atol {args.atol}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
