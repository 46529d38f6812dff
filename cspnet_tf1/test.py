"""Evaluate a CSPDarknet53 Saver checkpoint on the CIFAR-10 test batch (top-1 as the original test.py).

The network normalises with the statistics of each batch, so accuracy depends on how the test set is cut
into batches. This script cuts it exactly as training-time validation does (same fixed permutation, same
--batch_size, remainder dropped), so it reproduces the ``Validation accuracy`` that train.py printed.

    python test.py --CKPT_PATH=./checkpoint/cspdarknet53.ckpt --CIFAR_PATH=<cifar-10-batches-py or a parent>
"""
import argparse

import numpy as np

# oneDNN kernels on or off, as a probe measured on this host (TensorFlow reads the setting at import)
from common.tf_onednn import choose_tf_onednn_opts  # noqa: E402

choose_tf_onednn_opts()
import tensorflow as tf  # noqa: E402

import ckpt
import utils
from common import cli
from models import cspdarknet53

tf1 = tf.compat.v1


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--CKPT_PATH", default="./checkpoint/cspdarknet53.ckpt",
                   help="Saver prefix, a step folder, or the training output folder")
    p.add_argument("--CIFAR_PATH", default="./dataset", help="cifar-10-batches-py folder or a parent of it")
    p.add_argument("--DISPLAY_STEP", default=10, type=cli.positive_int, help="print the running accuracy every N batches")
    p.add_argument("--batch_size", default=64, type=cli.positive_int,
                   help="must equal the training --batch_size to reproduce it")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu", "npu"])
    p.add_argument("--conv_impl", default="auto", choices=cspdarknet53.CONV_IMPLS,
                   help="how convolutions run (same results; see train.py --conv_impl)")
    p.add_argument("--bn_impl", default="auto", choices=cspdarknet53.BN_IMPLS,
                   help="how the normalisation runs (same results; see train.py --bn_impl)")
    p.add_argument("--mixed_precision", default="auto", choices=["auto", "on", "off"], help=utils.MIXED_PRECISION_HELP)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    prefix = ckpt.find_resume(args.CKPT_PATH, None)["prefix"]
    device = utils.select_device(args.device)
    _, _, x_te, y_te = utils.load_cifar(args.CIFAR_PATH)
    batches = utils.eval_batches(len(x_te), args.batch_size)

    tf1.disable_eager_execution()
    conv_impl = cspdarknet53.select_conv_impl(args.conv_impl, device)
    bn_impl = cspdarknet53.select_bn_impl(args.bn_impl, device, conv_impl)
    x = tf1.placeholder(tf.float32, [None, 32, 32, 3])
    y = tf1.placeholder(tf.float32, [None, utils.NUM_CLASSES])
    pred = cspdarknet53.classifier(x, conv_impl=conv_impl, bn_impl=bn_impl)
    labels = tf.argmax(y, 1)
    top1 = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(pred, 1), labels), tf.float32))
    top5 = tf.reduce_mean(tf.cast(tf1.nn.in_top_k(pred, labels, 5), tf.float32))
    saver = tf1.train.Saver(tf1.global_variables())  # model variables only: no optimizer slots needed

    acc1, acc5 = [], []
    # mixed precision on Ascend as the original test.py (allow_mix_precision), and on GPU as training there
    with tf1.Session(config=utils.session_config(device, utils.mixed_precision(args.mixed_precision, device))) as sess:
        saver.restore(sess, prefix)
        for i, idx in enumerate(batches, 1):
            a1, a5 = sess.run([top1, top5], {x: x_te[idx].astype(np.float32), y: y_te[idx]})
            acc1.append(a1)
            acc5.append(a5)
            if i % args.DISPLAY_STEP == 0:
                print(f"batch {i}/{len(batches)}: running top-1 {np.mean(acc1):.4f}")
    print("---- Final accuracy ----")
    print(f"Top-1: {np.mean(acc1):.4f}")
    print(f"Top-5: {np.mean(acc5):.4f}")
    print(f"({len(batches)} batches of {args.batch_size} from {len(x_te)} test images, checkpoint {prefix})")
    return 0


if __name__ == "__main__":
    cli.run(main, errors=(RuntimeError, ValueError))
