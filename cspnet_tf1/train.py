"""Train CSPDarknet53 on CIFAR-10 in TensorFlow 1 graph style (tf.compat.v1 placeholders, Session, Saver).

Mirrors ``train.py`` of Ascend ModelZoo-TensorFlow ``TensorFlow/contrib/cv/CSPNet_ID0840_for_TensorFlow``
(commit a2c3332a): same flags, defaults, loss, optimiser, constant learning rate, log lines and FPS rule.
The original reports top-1 0.6605 (GPU) / 0.6645 (Ascend 910) on CIFAR-10 after 50 epochs.

    python train.py --data_path=<cifar-10-batches-py or a parent> --output_path=./checkpoint --epochs=50

Several devices: ``launch.py`` (through test/train_*_8p.sh) starts one process per device; see dist.py.
"""
import argparse
import functools
import os
import sys
import time
from pathlib import Path

import numpy as np

# oneDNN kernels on or off, as a probe measured on this host (TensorFlow reads the setting at import)
from common.tf_onednn import choose_tf_onednn_opts  # noqa: E402

choose_tf_onednn_opts()
import tensorflow as tf  # noqa: E402

import utils
from common import cputune
from common.checkpoint import CheckpointError
from common.cifar import DatasetError
from common.progress import Progress
from common.runrecord import case_name, finish_run
from common.summary import EpochSummary, plot_curves
from common.throughput import ThroughputMeter
from models import cspdarknet53
import ckpt
import dist

tf1 = tf.compat.v1
NETWORK = "CSPNet_ID0840_for_TensorFlow"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--MOMENTUM", default=0.9, type=float)  # the original declared type=int
    p.add_argument("--LAMBDA", default=5e-4, type=float, help="weight of sum(tf.nn.l2_loss) over conv kernels + FC weight")
    p.add_argument("--LEARNING_RATE", default=1e-3, type=float, help="constant learning rate")
    p.add_argument("--epochs", default=5, type=int)
    p.add_argument("--batch_size", default=64, type=int, help="per device")
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
                   help="auto: on for gpu/npu (as the original on Ascend), off on cpu; on for cpu: bfloat16 "
                        "(oneDNN's bf16 graph rewrite; fast only on CPUs with AVX512_BF16 or AMX)")
    p.add_argument("--tensorboard", action="store_true", help="write loss/accuracy event files every step")
    p.add_argument("--eval_batch_size", default=None, type=int,
                   help="images per validation batch (default --batch_size, as the original); the normalisation "
                        "uses each batch's statistics, so larger batches score higher")
    p.add_argument("--conv_impl", default="auto", choices=cspdarknet53.CONV_IMPLS,
                   help="how convolutions run (same sums): matmul = 1x1 kernels and maps of at most 2x2 as "
                        "matrix products (~1.9x faster on CPU); conv2d = tf.nn.conv2d everywhere as the original; "
                        "auto = conv2d on npu, matmul elsewhere")
    p.add_argument("--bn_impl", default="auto", choices=cspdarknet53.BN_IMPLS,
                   help="how the batch-axis normalisation and the Mish after it run (same maths): kernel = both "
                        "in one compiled CPU kernel, forward and gradient (built on first use, needs a C++ "
                        "compiler); fused = one FusedBatchNorm kernel + Mish ops; moments = tf.nn.moments + "
                        "batch_normalization + Mish ops as the original; auto = moments on npu, fused on gpu, "
                        "kernel on cpu (fused if it cannot be built)")
    p.add_argument("--perf", action="store_true", help="name the run record ..._perf instead of ..._acc")
    p.add_argument("--collective_timeout", default=600, type=float,
                   help="several ranks: seconds a step may wait for the other ranks before the run fails (0: no limit)")
    args = p.parse_args(argv)
    args.eval_batch_size = args.eval_batch_size or args.batch_size
    for name in ("epochs", "batch_size", "eval_batch_size", "DISPLAY_STEP", "VAL_EPOCH"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be a positive integer")
    if args.train_steps < 0 or args.collective_timeout < 0:
        p.error("--train_steps and --collective_timeout must be >= 0")
    if args.resume in ("False", "false", "0"):
        args.resume = ""
    elif args.resume in ("True", "true", "1"):  # the original's --resume was a bool
        args.resume = "auto"
    return args


def build_graph(lmbda, momentum, mixed_precision, seed, cluster=None):
    """Placeholders, logits, loss, accuracy and the Momentum train op (names as in the original graph).

    With several ranks the network and its train op are built as the replica step of the cluster's
    strategy (one replica per process), so variables are mirrored and gradients all-reduced.
    """
    cluster = cluster or dist.Cluster()
    if seed is not None:
        tf1.set_random_seed(seed)
    x = tf1.placeholder(tf.float32, [None, 32, 32, 3])
    y = tf1.placeholder(tf.float32, [None, utils.NUM_CLASSES])
    lr = tf1.placeholder(tf.float32)
    tower = functools.partial(_tower, x, y, lr, lmbda, momentum, mixed_precision, cluster)
    if cluster.strategy:
        with cluster.strategy.scope():
            g = cluster.strategy.extended.call_for_each_replica(tower)
    else:
        g = tower()
    summaries = tf1.summary.merge([tf1.summary.scalar("loss", g["loss"]), tf1.summary.scalar("l2_loss", g["l2_loss"]),
                                   tf1.summary.scalar("accuracy", g["accuracy"])])
    return dict(g, x=x, y=y, lr=lr, summaries=summaries)


def _tower(x, y, lr, lmbda, momentum, mixed_precision, cluster):
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
        opt = dist.wrap_optimizer(opt, cluster)
        scale = dist.gradient_scale(cluster)
        # minimize() in its two halves, so that the gradients of this replica's batch can be fetched
        grads = opt.compute_gradients(loss * scale if scale != 1.0 else loss)
        train_op = opt.apply_gradients(grads, global_step=global_step)
    return dict(pred=pred, loss=loss, l2_loss=l2_loss, accuracy=accuracy, top5=top5, global_step=global_step,
                train_op=train_op, grads=grads)


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

    # -- device, precision, ranks, seed -------------------------------------------------------------------
    device = utils.select_device(args.device)
    amp = args.mixed_precision == "on" or (args.mixed_precision == "auto" and device != "cpu")
    conv_impl = cspdarknet53.set_conv_impl(args.conv_impl, device)
    bn_impl = cspdarknet53.set_bn_impl(args.bn_impl, device)
    cluster = dist.cluster_from_env(device)
    rank, world, chief = cluster.rank, cluster.world, cluster.is_chief
    dist.watch_launcher()
    # rank 0 alone reads and writes checkpoints; the other ranks receive its state through the all-reduce
    state = ckpt.find_resume(args.resume, out) if args.resume and chief else None
    seed = args.seed
    if seed is None:
        seed = state["seed"] if state and state.get("seed") is not None else int(np.random.SeedSequence().entropy % 2**31)
    if state and state.get("seed") not in (None, seed):
        print(f"resume: checkpoint was trained with --seed {state['seed']}, continuing with {seed}")

    # -- data: each rank its own shard, the per-device batch ----------------------------------------------
    x_tr, y_tr, x_te, y_te = utils.load_cifar(args.data_path)
    x_tr, y_tr = dist.shard(x_tr, y_tr, cluster)
    train_batches = utils.random_batch(len(x_tr), args.batch_size, np.random.RandomState(seed))
    test_batches = utils.eval_batches(len(x_te), args.eval_batch_size)
    steps_per_epoch = len(train_batches)
    print(f"device {device}, mixed precision {('bf16' if device == 'cpu' else 'on') if amp else 'off'}, "
          f"convolutions {conv_impl}, "
          f"normalisation {bn_impl}, seed {seed}; {len(x_tr)} train / {len(x_te)} test images, "
          f"{steps_per_epoch} batches of {args.batch_size} per epoch")
    if chief:
        cputune.announce()  # the CPU and what was probed on it (oneDNN on/off, conv_impl, bn_impl)
    if cluster.distributed:
        print(f"rank {rank}/{world}: {len(x_tr)} training images, shard sha256 {dist.digest([x_tr, y_tr])}; "
              f"global batch {args.batch_size * world}", flush=True)

    # -- graph --------------------------------------------------------------------------------------------
    tf1.disable_eager_execution()
    if args.seed is not None:
        tf.config.experimental.enable_op_determinism()
    target, config = dist.start(cluster, utils.session_config(device, amp))
    # fp16 + loss scaling in the graph on accelerators; on CPU bf16 is a session rewrite (utils.session_config)
    g = build_graph(args.LAMBDA, args.MOMENTUM, amp and device != "cpu", seed, cluster)
    init = tf1.global_variables_initializer()
    head_in, head = dist.build_agree(cluster)
    broadcast = dist.build_broadcast(cluster) if cluster.hccl else None
    params = sum(int(np.prod(v.shape)) for v in tf1.trainable_variables())
    saver = tf1.train.Saver(max_to_keep=None)
    # runs that wait on other ranks fail after --collective_timeout instead of hanging
    wait = dist.run_options(cluster, args.collective_timeout)
    writer = None

    with tf1.Session(target=target, config=config) as sess:
        # -- initialise, resume, agree ----------------------------------------------------------------------
        last_val = None
        # every rank runs the initialiser: under the strategy it broadcasts rank 0's initial values
        sess.run(init, options=wait)
        if state:
            saver.restore(sess, state["prefix"])
            last_val = state.get("val_accuracy")
        if head is not None:  # rank 0's seed, and whether it restored, to every rank
            seed0, restored = (int(v) for v in sess.run(head, {head_in: [seed, int(bool(state))]}, options=wait))
            if seed0 != seed:
                seed = seed0
                train_batches = utils.random_batch(len(x_tr), args.batch_size, np.random.RandomState(seed))
            if restored:  # built only now, by every rank alike, so a fresh run carries no extra ops
                sess.run(dist.build_broadcast(cluster), options=wait)
        elif broadcast:
            sess.run(broadcast)
        # the position in the run follows from the global step alone: epoch, and batches done within it
        step = int(sess.run(g["global_step"]))
        start_epoch, skip = divmod(step, steps_per_epoch)
        if state:
            print(f"resume: restored {state['prefix']} (epoch {start_epoch}, global step {step})")
        elif step:
            print(f"resume: rank 0 restored its checkpoint (epoch {start_epoch}, global step {step})")
        if args.tensorboard and chief:
            writer = tf1.summary.FileWriter(os.path.join(args.SUMMARY or out / "logs", "train"), sess.graph)
        summary = EpochSummary(out / "summary.csv", resume=bool(state)) if chief else None

        # -- epoch loop -----------------------------------------------------------------------------------
        # FPS/StepTime as the original: the first epoch (graph set-up, allocator warm-up) is excluded;
        # ranks step in lockstep, so the job's images/sec is one rank's times the number of ranks
        run_steps = max(0, args.epochs * steps_per_epoch - step)
        meter = ThroughputMeter(args.batch_size, warmup_steps=steps_per_epoch if run_steps > steps_per_epoch else 1,
                                world_size=world)
        progress = Progress(run_steps, args.batch_size * world, enabled=chief and sys.stdout.isatty())
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
                res = sess.run(fetches, feed, options=wait)
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
            if not chief:  # the other ranks go on to the next step and wait for rank 0 in its all-reduce
                if stop:
                    break
                continue
            val = val5 = None
            if (e + 1) % args.VAL_EPOCH == 0 or e + 1 == args.epochs or stop:
                print(f"Epoch {e}, validating ....")
                val, val5 = validate(sess, g, x_te, y_te, test_batches)
                last_val = val
                print(f"Elapsed time: {utils.format_time(time.time() - start_time)}")
                print(f"Validation accuracy: {val:.4f}")
            epoch_sec = time.time() - epoch_t0
            summary.add(e, train_loss=float(np.mean(losses)) if losses else None, eval_top1=val, eval_top5=val5,
                        lr=args.LEARNING_RATE,
                        images_per_sec=epoch_steps * args.batch_size * world / max(epoch_sec, 1e-9), time_sec=epoch_sec)
            saved = ckpt.save(sess, saver, out, epoch=e, global_step=step, seed=seed,
                              batch_size=args.batch_size, val_accuracy=last_val, rank_size=world,
                              eval_batch_size=args.eval_batch_size)
            if val is not None:
                print(f"checkpoint saved in file: {saved}")
            if stop:
                break

        # -- results ------------------------------------------------------------------------------------
        print(f"Elapsed time: {utils.format_time(time.time() - start_time)}")
        print(f"StepTime = {meter.sec_per_step}")
        print(f"FPS = {meter.images_per_sec}")
        if cluster.distributed:
            # every rank prints it: equal digests show the all-reduce kept the replicas identical
            print(f"rank {rank}/{world}: final weights sha256 {dist.digest(sess.run(tf1.trainable_variables()))}",
                  flush=True)
        if not chief:
            return 0
        print(f"checkpoint saved in file: {out / ckpt.CKPT_NAME}")
        if writer:
            writer.close()
    plot_curves(out / "summary.csv", out / "curves.png", title=f"{NETWORK} on {Path(args.data_path).name}")
    finish_run(output_dir=out, network=NETWORK, case=case_name(NETWORK, args.batch_size, world, args.perf),
               framework="tensorflow", framework_version=tf.__version__, device=device, rank_size=world,
               batch_size=args.batch_size, params=params, epochs=args.epochs, meter=meter,
               accuracy=last_val if last_val is not None else float("nan"), loss=loss_v, seed=seed,
               extra={"global_step": step, "mixed_precision": amp, "augment": args.augment,
                      "reshuffle": args.reshuffle, "learning_rate": args.LEARNING_RATE,
                      "eval_batch_size": args.eval_batch_size,
                      "data_path": str(Path(args.data_path).resolve()),
                      "all_reduce": "hccl" if cluster.hccl else "tf-collective" if cluster.strategy else None})
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (DatasetError, CheckpointError, FloatingPointError, RuntimeError, ValueError) as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        sys.exit(1)
    except tf.errors.DeadlineExceededError:
        print("ERROR: the other ranks did not answer within --collective_timeout seconds; did a rank die?",
              file=sys.stderr)
        sys.exit(1)
    except (tf.errors.UnavailableError, tf.errors.CancelledError, tf.errors.AbortedError) as exc:
        print(f"ERROR: lost the connection to another rank ({type(exc).__name__}); did a rank die?", file=sys.stderr)
        sys.exit(1)
