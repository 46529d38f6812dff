"""Freeze a CSPDarknet53 checkpoint into a GraphDef .pb (as the Ascend ACL companion's convert_pb.py) and ONNX.

Input ``Placeholder`` float32 [N, 32, 32, 3] of raw 0-255 pixels, output ``stage6/Add_1`` (logits). Both
files are loaded back and compared with the TensorFlow session on one batch; a mismatch is an error.
As in training, the normalisation uses the statistics of the batch fed in, so feed whole batches.

    python export.py --CKPT_PATH=./checkpoint/cspdarknet53.ckpt --output_dir=./export
"""
import argparse
import os
from pathlib import Path

import numpy as np

# oneDNN kernels on or off, as a probe measured on this host (TensorFlow reads the setting at import)
from common.tf_onednn import choose_tf_onednn_opts  # noqa: E402

choose_tf_onednn_opts()
import tensorflow as tf  # noqa: E402

import ckpt
import utils
from common import cli
from common.checkpoint import atomic_write_bytes
from models import cspdarknet53

tf1 = tf.compat.v1
INPUT_NODE, OUTPUT_NODE = "Placeholder", cspdarknet53.LOGITS_NODE


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--CKPT_PATH", default="./checkpoint/cspdarknet53.ckpt",
                   help="Saver prefix, a step folder, or the training output folder")
    p.add_argument("--output_dir", default="./export", help="where cspdarknet53.pb and cspdarknet53.onnx go")
    p.add_argument("--CIFAR_PATH", default=None, help="check on the first test images (default: a random batch)")
    p.add_argument("--batch_size", default=64, type=cli.positive_int, help="size of the batch the exports are checked on")
    p.add_argument("--format", default="both", choices=["pb", "onnx", "both"])
    p.add_argument("--opset", default=13, type=int)
    p.add_argument("--atol", default=1e-3, type=float, help="largest accepted |logit difference|")
    return p.parse_args(argv)


def freeze(prefix):
    """Frozen GraphDef of the inference graph, plus the session's logits on a probe function."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf1.placeholder(tf.float32, [None, 32, 32, 3], name=INPUT_NODE)
        # the original's Conv2D + moments graph: the form offline converters (ATC, ONNX runtimes) expect
        logits = cspdarknet53.classifier(x, conv_impl="conv2d", bn_impl="moments")
        assert logits.op.name == OUTPUT_NODE, logits.op.name
        sess = tf1.Session(graph=graph, config=utils.session_config("cpu"))
        tf1.train.Saver().restore(sess, prefix)
        frozen = tf1.graph_util.convert_variables_to_constants(sess, graph.as_graph_def(), [OUTPUT_NODE])
    return frozen, lambda batch: sess.run(logits, {x: batch})


def run_pb(graph_def, batch):
    graph = tf.Graph()
    with graph.as_default():
        tf1.import_graph_def(graph_def, name="")
        with tf1.Session(graph=graph, config=utils.session_config("cpu")) as sess:
            return sess.run(f"{OUTPUT_NODE}:0", {f"{INPUT_NODE}:0": batch})


def to_onnx(graph_def, opset):
    import tf2onnx
    # tf2onnx deep-copies the whole graph, weights included, before each of its ~36 optimizer passes so that a
    # pass that raises can be skipped: 17 of its 50 s on this 27M-parameter graph (2-core AMD EPYC). Without the
    # copies such a pass fails the export instead, and the result is checked against the session either way.
    os.environ.setdefault("TF2ONNX_CATCH_ERRORS", "FALSE")
    model, _ = tf2onnx.convert.from_graph_def(graph_def, input_names=[f"{INPUT_NODE}:0"],
                                              output_names=[f"{OUTPUT_NODE}:0"], opset=opset)
    return model.SerializeToString()


def run_onnx(data, batch):
    import onnxruntime as ort
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: batch})[0]


def main(argv=None):
    args = parse_args(argv)
    prefix = ckpt.find_resume(args.CKPT_PATH, None)["prefix"]
    if args.CIFAR_PATH:
        _, _, x_te, _ = utils.load_cifar(args.CIFAR_PATH)
        batch = x_te[: args.batch_size].astype(np.float32)
    else:
        batch = np.random.RandomState(0).randint(0, 256, (args.batch_size, 32, 32, 3)).astype(np.float32)
    tf1.disable_eager_execution()
    frozen, reference = freeze(prefix)
    expected = reference(batch)
    out = Path(args.output_dir)

    results = {}
    if args.format in ("pb", "both"):
        results["pb"] = (frozen.SerializeToString(), lambda: run_pb(frozen, batch))
    if args.format in ("onnx", "both"):
        data = to_onnx(frozen, args.opset)
        results["onnx"] = (data, lambda: run_onnx(data, batch))
    for fmt, (data, run) in results.items():
        diff = float(np.max(np.abs(run() - expected)))
        if not diff <= args.atol:
            raise RuntimeError(f"{fmt} export differs from the session by {diff:.3g} (> --atol {args.atol})")
        path = atomic_write_bytes(out / f"cspdarknet53.{fmt}", data)
        print(f"wrote {path} ({len(data) / 2**20:.1f} MiB): input {INPUT_NODE} [N,32,32,3] float32, "
              f"output {OUTPUT_NODE} [N,10]; max |diff| vs session {diff:.2e} on a batch of {len(batch)}")
    return 0


if __name__ == "__main__":
    cli.run(main, errors=(RuntimeError, ValueError))
