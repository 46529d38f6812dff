"""Export a checkpoint to ONNX and check it with onnxruntime against PyTorch.

Stands in for mmcls' ``tools/deployment/pytorch2onnx.py`` (the original's inference format is the
``.pth`` checkpoint itself). The graph takes normalised NCHW float32 images (``input``, any batch size)
and returns class probabilities (``probs``, softmax over the 100 classes), like mmcls' deployment tool.

    python tools/export.py CONFIG CHECKPOINT [--output-file model.onnx] [--opset-version 18]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

RECIPE = Path(__file__).resolve().parents[1]
for p in (RECIPE, RECIPE.parent):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from common import cli  # noqa: E402
from mmcls_ext.cli import ERRORS  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Export an mmcls classifier checkpoint to ONNX")
    parser.add_argument("config", help="config file path")
    parser.add_argument("checkpoint", help="checkpoint file")
    parser.add_argument("--output-file", default="tmp.onnx", help="ONNX file to write")
    parser.add_argument("--opset-version", type=int, default=18)
    parser.add_argument("--shape", type=int, nargs=2, default=[32, 32], metavar=("H", "W"), help="input size")
    parser.add_argument("--verify-batch", type=int, default=4,
                        help="batch of random inputs compared between PyTorch and onnxruntime")
    parser.add_argument("--atol", type=float, default=1e-4, help="largest allowed difference of probabilities")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    return export(parse_args(argv))


def export(args) -> int:
    import numpy as np
    import torch
    from mmcls.models import build_classifier

    import mmcls_ext  # noqa: F401  (weights_only checkpoint loader)
    from common.checkpoint import atomic_write
    from mmcls_ext.checkpoint import load_weights
    from mmcls_ext.cli import load_config

    cfg = load_config(args.config)
    model = build_classifier(cfg.model)
    load_weights(model, args.checkpoint, f"the model of {args.config}")
    model.eval()

    class Probabilities(torch.nn.Module):
        def __init__(self, classifier):
            super().__init__()
            self.classifier = classifier

        def forward(self, x):
            return self.classifier.simple_test(x, post_process=False)

    net = Probabilities(model).eval()
    h, w = args.shape
    dummy = torch.randn(2, 3, h, w)
    batch = torch.export.Dim("batch", min=1, max=4096)

    def _write(tmp):
        torch.onnx.export(net, (dummy,), tmp, input_names=["input"], output_names=["probs"],
                          opset_version=args.opset_version, dynamic_shapes={"x": {0: batch}}, dynamo=True,
                          external_data=False)
    out = atomic_write(args.output_file, _write)

    import onnxruntime as ort
    x = torch.randn(args.verify_batch, 3, h, w, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = net(x).numpy()
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x.numpy()})[0]
    diff = float(np.abs(got - ref).max())
    same_top1 = bool((got.argmax(1) == ref.argmax(1)).all())
    print(f"exported {out} ({out.stat().st_size / 1e6:.1f} MB); onnxruntime vs PyTorch on {len(x)} inputs: "
          f"max |diff| {diff:.3g}, same top-1 {same_top1}")
    if diff > args.atol or not same_top1:
        raise cli.RecipeError(f"{out}: onnxruntime output differs from PyTorch (max |diff| {diff:.3g} > "
                              f"{args.atol}, same top-1 {same_top1})")
    return 0


if __name__ == "__main__":
    cli.run(main, errors=ERRORS)
