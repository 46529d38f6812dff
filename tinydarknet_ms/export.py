"""Export a Tiny-DarkNet checkpoint to MINDIR (and ONNX, or AIR on Ascend), then load it back and run it once.

As mindspore-ai/models research/cv/tinydarknet export.py (random input of shape [batch_size, 3, size, size],
``file_name`` + ``file_format``); the r1.2 version also wrote ONNX. Every exported file is reloaded
(MINDIR: mindspore.load + nn.GraphCell; ONNX: onnxruntime) and run on that seeded random input (uniform 0-1,
not images: export has no data), and its outputs must match the exported network's; a file that does not is
not left behind. This is a round-trip check of the export only: it says nothing about the checkpoint's
accuracy, and its input is not an image (tests/test_e2e.py runs the files on real images against the checkpoint).

    python export.py --checkpoint_path=train_tinydarknet_imagenet-500_1251.ckpt [--file_format=ALL]
"""
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import mindspore as ms
import mindspore.nn as nn

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE), str(_HERE.parent)]  # src/ and the repo's common/ without any setup
from common import cli  # noqa: E402
from common.checkpoint import CheckpointError  # noqa: E402
from common.ms import load_ckpt, load_into  # noqa: E402
from src.config import device_id_from_env, get_config  # noqa: E402
from src.tinydarknet import TinyDarkNet  # noqa: E402
from src.utils import detect_device, setup_context  # noqa: E402

KEYS = ["device_target", "device_id", "seed", "dataset_name", "num_classes", "image_size", "batch_size",
        "checkpoint_path", "file_name", "file_format"]
SUFFIX = {"MINDIR": ".mindir", "ONNX": ".onnx", "AIR": ".air"}
RTOL, ATOL = 1e-3, 1e-4


def check_mindir(path, x, expected):
    graph = nn.GraphCell(ms.load(path))
    got = graph(ms.Tensor(x)).asnumpy()
    return float(np.max(np.abs(got - expected))), np.allclose(got, expected, rtol=RTOL, atol=ATOL)


def check_onnx(path, x, expected):
    import onnxruntime as ort
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    return float(np.max(np.abs(got - expected))), np.allclose(got, expected, rtol=RTOL, atol=ATOL)


def main(argv=None):
    cfg = get_config(argv, description=__doc__.splitlines()[0], keys=KEYS, prog="export.py")
    device = detect_device(cfg.device_target)
    setup_context(device, device_id_from_env(cfg))
    formats = ["MINDIR", "ONNX"] if cfg.file_format == "ALL" else [cfg.file_format]
    if "AIR" in formats and device != "Ascend":
        raise cli.RecipeError("file_format AIR needs the Ascend stack (MindSpore exports AIR only there); "
                              "use MINDIR or ONNX")

    params = load_ckpt(cfg.checkpoint_path)
    net = TinyDarkNet(num_classes=cfg.num_classes, leaky="max")  # one LeakyRelu op per layer in the file
    load_into(net, params, cfg.checkpoint_path, f"Tiny-DarkNet with num_classes={cfg.num_classes}")
    net.set_train(False)

    rng = np.random.default_rng(cfg.seed)
    x = rng.uniform(0.0, 1.0, (cfg.batch_size, 3, cfg.image_size, cfg.image_size)).astype(np.float32)
    expected = net(ms.Tensor(x)).asnumpy()
    target = Path(cfg.file_name).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    # export into a scratch folder beside the target and move a file into place only once it has passed
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for fmt in formats:
            final, diff = export_checked(net, x, expected, fmt, work / target.name, target)
            print(f"exported {final} ({fmt}); reloaded and run on random input (not images): max abs diff vs "
                  f"the network {diff:.3g}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def export_checked(net, x, expected, fmt, staged, target):
    """Export ``fmt`` to ``staged``, reload it and compare its outputs with ``expected``; only a file that
    matches is moved to ``target`` + the format's suffix. Returns (that path, max abs diff)."""
    ms.export(net, ms.Tensor(x), file_name=str(staged), file_format=fmt)
    produced = staged.with_name(staged.name + SUFFIX[fmt])
    if not produced.is_file():
        raise cli.RecipeError(f"{produced}: MindSpore reported no error but wrote no {fmt} file")
    check = {"MINDIR": check_mindir, "ONNX": check_onnx}.get(fmt)
    # AIR is consumed by Ascend's ATC tool; it cannot be run back here
    diff, ok = check(str(produced), x, expected) if check else (0.0, True)
    if not ok:
        raise cli.RecipeError(f"{produced.name}: reloaded {fmt} model differs from the network "
                              f"(max abs diff {diff:.3g})")
    final = target.with_name(target.name + SUFFIX[fmt])
    os.replace(produced, final)
    return final, diff


if __name__ == "__main__":
    cli.run(main, errors=(CheckpointError,))
