"""Export a trained model: HDF5 (the original's model format), SavedModel and ONNX, each reloaded and checked.

    python export.py --checkpoint=<output_path | model.h5 | epoch_NNNN> --output_dir=export [--data_dir=...]

The check feeds the same batch (test images when --data_dir is given, else seeded random inputs) to the
Keras model and to each reloaded export; the largest absolute difference of the softmax outputs must be
under --atol, or the script ends with one ERROR line and exit 2.
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

import numpy as np  # noqa: E402

from common import cli  # noqa: E402
from common.checkpoint import CheckpointError, atomic_write, atomic_write_dir  # noqa: E402
from common.cifar import DatasetError  # noqa: E402
from src.data import load_arrays  # noqa: E402

NAME = "cutmix_resnet20"
ERRORS = (CheckpointError, DatasetError)  # one "ERROR: ..." line and exit 2 (common.cli)
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
    x = check_batch(args.data_dir)
    from src import checkpointing
    model, source = checkpointing.load_model(args.checkpoint)
    want = model.predict(x, verbose=0)
    paths = write_exports(model, Path(args.output_dir), args.opset)
    worst = 0.0
    for kind, y in reload_and_predict(paths, x).items():
        diff = float(np.max(np.abs(y - want)))
        worst = max(worst, diff)
        print(f"export: {kind:12s} max |diff| vs Keras = {diff:.3g}")
    print(f"export: {source} -> {', '.join(str(p) for p in paths.values())}")
    if worst > args.atol:
        raise cli.RecipeError(f"exported model differs from Keras by {worst:.3g} > --atol {args.atol}")
    return 0


def check_batch(data_dir):
    """The inputs of the comparison: 32 test images (numpy only: bad data fails before TensorFlow starts)."""
    if data_dir:
        return load_arrays(data_dir)[2][:32].astype(np.float32) / 255.0
    return np.random.default_rng(0).random((8, 32, 32, 3), dtype=np.float32)


def write_exports(model, out: Path, opset: int) -> dict:
    """HDF5, SavedModel and ONNX, each written atomically."""
    import tensorflow as tf
    import tf2onnx

    h5 = atomic_write(out / f"{NAME}.h5", lambda tmp: model.save(tmp, save_format="h5", include_optimizer=False))
    sm = atomic_write_dir(out / "saved_model", lambda tmp: model.save(tmp, save_format="tf", include_optimizer=False))
    spec = (tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name="input"),)

    def to_onnx(tmp):
        tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset, output_path=tmp)
    return {"h5": h5, "saved_model": sm, "onnx": atomic_write(out / f"{NAME}.onnx", to_onnx)}


def reload_and_predict(paths: dict, x) -> dict:
    import onnxruntime as ort
    import tf_keras as keras

    session = ort.InferenceSession(str(paths["onnx"]), providers=["CPUExecutionProvider"])
    return {
        "h5": keras.models.load_model(str(paths["h5"]), compile=False).predict(x, verbose=0),
        "saved_model": keras.models.load_model(str(paths["saved_model"]), compile=False).predict(x, verbose=0),
        "onnx": session.run(None, {session.get_inputs()[0].name: x})[0],
    }


if __name__ == "__main__":
    cli.run(main, errors=ERRORS)
