"""Train CSPDarknet53 on CIFAR-10 in TensorFlow 1 graph style (tf.compat.v1 placeholders, Session, Saver).

Mirrors ``train.py`` of Ascend ModelZoo-TensorFlow ``TensorFlow/contrib/cv/CSPNet_ID0840_for_TensorFlow``
(commit a2c3332a): same flags, defaults, loss, optimiser, constant learning rate, log lines and FPS rule.
The original reports top-1 0.6605 (GPU) / 0.6645 (Ascend 910) on CIFAR-10 after 50 epochs.

    python train.py --data_path=<cifar-10-batches-py or a parent> --output_path=./checkpoint --epochs=50
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

# oneDNN kernels are off by default on non-Intel x86; they double the CPU step rate of this network
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
import tensorflow as tf  # noqa: E402

import utils
from common.checkpoint import CheckpointError
from common.cifar import DatasetError
from common.progress import Progress
from common.runrecord import case_name, finish_run
from common.summary import EpochSummary, plot_curves
from common.throughput import ThroughputMeter
from models import cspdarknet53
import ckpt

tf1 = tf.compat.v1
NETWORK = "CSPNet_ID0840_for_TensorFlow"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--MOMENTUM", default=0.9, type=float)  # the original declared type=int
    p.add_argument("--LAMBDA", default=5e-4, type=float, help="weight of sum(tf.nn.l2_loss) over conv kernels + FC weight")
    p.add_argument("--LEARNING_RATE", default=1e-3, type=float, help="constant learning rate")
    p.add_argument("--epochs", default=5, type=int)
    p.add_argument("--batch_size", default=64, type=int)
    p.add_argument("--SUMMARY", default=None, help="TensorBoard event folder (default <output_path>/logs; needs --tensorboard)")
    p.add_argument("--output_path", default="./checkpoint", help="checkpoints, summary.csv, curves.png, run records")
    p.add_argument("--data_path", default="./dataset", help="cifar-10-batches-py folder or a parent of it")
    p.add_argument("--DISPLAY_STEP", default=1000, type=int, help="print loss/accuracy every N global steps")
    p.add_argument("--VAL_EPOCH", default=5, type=int, help="validate every N epochs (and after the last)")
    p.add_argument("--resume", default="", help="checkpoint to resume from: 'auto' (latest valid in output_path), "
                   "an epoch folder, or a Saver prefix such as checkpoint/cspdarknet53.ckpt")
    p.add_argument("--train_steps", default=0, type=int, help="stop after this many global steps (0: no limit)")
    p.add_argument("--seed", default=None, type=int, help="graph and data-order seed (default: random, recorded)")
    p.add_argument("--augment", action="store_true", help="opt-in random crop (pad 4) + horizontal flip")
    p.add_argument("--reshuffle", action="store_true", help="opt-in reshuffle every epoch (original: once)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu", "npu"])
    p.add_argument("--mixed_precision", default="auto", choices=["auto", "on", "off"],
                   help="auto: on for gpu/npu (as the original on Ascend), off on cpu")
    p.add_argument("--tensorboard", action="store_true", help="write loss/accuracy event files every step")
    p.add_argument("--perf", action="store_true", help="name the run record ..._perf instead of ..._acc")
    args = p.parse_args(argv)
    for name in ("epochs", "batch_size", "DISPLAY_STEP", "VAL_EPOCH"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be a positive integer")
    if args.train_steps < 0:
        p.error("--train_steps must be >= 0")
    if args.resume in ("False", "false", "0"):
        args.resume = ""
    elif args.resume in ("True", "true", "1"):  # the original's --resume was a bool
        args.resume = "auto"
    return args


def build_graph(lmbda, momentum, mixed_precision, seed):
    """Placeholders, logits, loss, accuracy and the Momentum train op (names as in the original graph)."""
    if seed is not None:
        tf1.set_random_seed(seed)
    x = tf1.placeholder(tf.float32, [None, 32, 32, 3])
    y = tf1.placeholder(tf.float32, [None, utils.NUM_CLASSES])
    lr = tf1.placeholder(tf.float32)
    pred = cspdarknet53.classifier(x)
    with tf.name_scope("cross_entropy"):
        cross_entropy = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=y, logits=pred))
    with tf.name_scope("l2_loss"):
        l2_loss = lmbda * tf.add_n([tf.nn.l2_loss(w) for w in tf1.get_collection("weights")])
    with tf.name_scope("loss"):
        loss = cross_entropy + l2_loss
    with tf.name_scope("accuracy"):
        labels = tf.argmax(y, 1)
        accuracy = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(pred, 1), labels), tf.float32))
        top5 = tf.reduce_mean(tf.cast(tf1.nn.in_top_k(pred, labels, 5), tf.float32))
    global_step = tf1.Variable(0, trainable=False)
    with tf.name_scope("optimizer"):
        opt = tf1.train.MomentumOptimizer(learning_rate=lr, momentum=momentum)
        if mixed_precision:
            # fp16 compute with dynamic loss scaling: the GPU counterpart of Ascend's allow_mix_precision
            opt = tf1.train.experimental.enable_mixed_precision_graph_rewrite(opt)
        train_op = opt.minimize(loss, global_step=global_step)
    summaries = tf1.summary.merge([tf1.summary.scalar("loss", loss), tf1.summary.scalar("l2_loss", l2_loss),
                                   tf1.summary.scalar("accuracy", accuracy)])
    return dict(x=x, y=y, lr=lr, pred=pred, loss=loss, accuracy=accuracy, top5=top5, global_step=global_step,
                train_op=train_op, summaries=summaries)


def validate(sess, g, x_te, y_te, batches):
    """Mean of per-batch top-1 (and top-5) over the fixed test batches, as the original averaged it."""
    top1, top5 = [], []
    for idx in batches:
        a, a5 = sess.run([g["accuracy"], g["top5"]], {g["x"]: x_te[idx].astype(np.float32), g["y"]: y_te[idx]})
        top1.append(a)
        top5.append(a5)
    return float(np.mean(top1)), float(np.mean(top5))


def main(argv=None):
    args = parse_args(argv)
    out = Path(args.output_path).resolve()

    # -- device, precision, seed --------------------------------------------------------------------------
    device = utils.select_device(args.device)
    amp = args.mixed_precision == "on" or (args.mixed_precision == "auto" and device != "cpu")
    if amp and device == "cpu":
        raise RuntimeError("--mixed_precision on needs a GPU or an NPU")
    state = ckpt.find_resume(args.resume, out) if args.resume else None
    seed = args.seed
    if seed is None:
        seed = state["seed"] if state and state.get("seed") is not None else int(np.random.SeedSequence().entropy % 2**31)
    if state and state.get("seed") not in (None, seed):
        print(f"resume: checkpoint was trained with --seed {state['seed']}, continuing with {seed}")

    # -- data ---------------------------------------------------------------------------------------------
    x_tr, y_tr, x_te, y_te = utils.load_cifar(args.data_path)
    order_rng = np.random.RandomState(seed)
    train_batches = utils.random_batch(len(x_tr), args.batch_size, order_rng)
    test_batches = utils.eval_batches(len(x_te), args.batch_size)
    steps_per_epoch = len(train_batches)
    print(f"device {device}, mixed precision {'on' if amp else 'off'}, seed {seed}; "
          f"{len(x_tr)} train / {len(x_te)} test images, {steps_per_epoch} batches of {args.batch_size} per epoch")

    # -- graph --------------------------------------------------------------------------------------------
    tf1.disable_eager_execution()
    if args.seed is not None:
        tf.config.experimental.enable_op_determinism()
    g = build_graph(args.LAMBDA, args.MOMENTUM, amp, seed)
    params = sum(int(np.prod(v.shape)) for v in tf1.trainable_variables())
    saver = tf1.train.Saver(max_to_keep=None)
    writer = None

    with tf1.Session(config=utils.session_config(device, amp)) as sess:
        # -- resume or initialise -------------------------------------------------------------------------
        last_val = None
        if state:
            saver.restore(sess, state["prefix"])
            last_val = state.get("val_accuracy")
        else:
            sess.run(tf1.global_variables_initializer())
        # the position in the run follows from the global step alone: epoch, and batches done within it
        step = int(sess.run(g["global_step"]))
        start_epoch, skip = divmod(step, steps_per_epoch)
        if state:
            print(f"resume: restored {state['prefix']} (epoch {start_epoch}, global step {step})")
        if args.tensorboard:
            writer = tf1.summary.FileWriter(os.path.join(args.SUMMARY or out / "logs", "train"), sess.graph)
        summary = EpochSummary(out / "summary.csv", resume=bool(state))

        # -- epoch loop -----------------------------------------------------------------------------------
        # FPS/StepTime as the original: the first epoch (graph set-up, allocator warm-up) is excluded
        run_steps = max(0, args.epochs * steps_per_epoch - step)
        meter = ThroughputMeter(args.batch_size, warmup_steps=steps_per_epoch if run_steps > steps_per_epoch else 1)
        progress = Progress(run_steps, args.batch_size, enabled=sys.stdout.isatty())
        start_time, loss_v = time.time(), None
        # loss/accuracy are those of the batch before the update (the original re-ran the batch after it)
        fetches = [g["train_op"], g["loss"], g["accuracy"]]
        if writer:
            fetches.append(g["summaries"])
        stop = False
        for e in range(start_epoch, args.epochs):
            if args.reshuffle:
                train_batches = utils.random_batch(len(x_tr), args.batch_size, np.random.RandomState([seed, e]))
            epoch_t0, epoch_steps, losses = time.time(), 0, []
            for i, idx in enumerate(train_batches):
                if e == start_epoch and i < skip:
                    continue
                # one generator per batch, so a resumed run draws the same crops and flips
                images = utils.augment(x_tr[idx], np.random.RandomState([seed, e, i])) if args.augment else x_tr[idx]
                feed = {g["x"]: images.astype(np.float32), g["y"]: y_tr[idx], g["lr"]: args.LEARNING_RATE}
                meter.start()
                res = sess.run(fetches, feed)
                meter.stop()
                # counted here: a global_step fetched beside the train op may be read before or after its increment
                step += 1
                _, loss_v, acc_v = res[:3]
                if writer:
                    writer.add_summary(res[3], step)
                if not np.isfinite(loss_v):
                    raise FloatingPointError(f"loss became {loss_v} at global step {step}")
                losses.append(float(loss_v))
                epoch_steps += 1
                progress.update(e, step, float(loss_v), args.LEARNING_RATE)
                if step % args.DISPLAY_STEP == 0:
                    print("Epoch: {:03d} Step/Batch: {:09d} --- Loss: {:.7f} Training accuracy: {:.4f}".format(
                        e, step, loss_v, acc_v))
                    print(f"Elapsed time: {utils.format_time(time.time() - start_time)}")
                if args.train_steps and step >= args.train_steps:
                    stop = True
                    break
            progress.end_epoch()
            val = val5 = None
            if (e + 1) % args.VAL_EPOCH == 0 or e + 1 == args.epochs or stop:
                print(f"Epoch {e}, validating ....")
                val, val5 = validate(sess, g, x_te, y_te, test_batches)
                last_val = val
                print(f"Elapsed time: {utils.format_time(time.time() - start_time)}")
                print(f"Validation accuracy: {val:.4f}")
            epoch_sec = time.time() - epoch_t0
            summary.add(e, train_loss=float(np.mean(losses)) if losses else None, eval_top1=val, eval_top5=val5,
                        lr=args.LEARNING_RATE, images_per_sec=epoch_steps * args.batch_size / max(epoch_sec, 1e-9),
                        time_sec=epoch_sec)
            saved = ckpt.save(sess, saver, out, epoch=e, global_step=step, seed=seed,
                              batch_size=args.batch_size, val_accuracy=last_val)
            if val is not None:
                print(f"checkpoint saved in file: {saved}")
            if stop:
                break

        # -- results ------------------------------------------------------------------------------------
        print(f"Elapsed time: {utils.format_time(time.time() - start_time)}")
        print(f"StepTime = {meter.sec_per_step}")
        print(f"FPS = {meter.images_per_sec}")
        print(f"checkpoint saved in file: {out / ckpt.CKPT_NAME}")
        if writer:
            writer.close()
    plot_curves(out / "summary.csv", out / "curves.png", title=f"{NETWORK} on {Path(args.data_path).name}")
    finish_run(output_dir=out, network=NETWORK, case=case_name(NETWORK, args.batch_size, 1, args.perf),
               framework="tensorflow", framework_version=tf.__version__, device=device, rank_size=1,
               batch_size=args.batch_size, params=params, epochs=args.epochs, meter=meter,
               accuracy=last_val if last_val is not None else float("nan"), loss=loss_v, seed=seed,
               extra={"global_step": step, "mixed_precision": amp, "augment": args.augment,
                      "reshuffle": args.reshuffle, "learning_rate": args.LEARNING_RATE,
                      "data_path": str(Path(args.data_path).resolve())})
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (DatasetError, CheckpointError, FloatingPointError, RuntimeError, ValueError) as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        sys.exit(1)
