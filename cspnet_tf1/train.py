"""Train CSPDarknet53 on CIFAR-10 in TensorFlow 1 graph style (tf.compat.v1 placeholders, Session, Saver).

Mirrors ``train.py`` of Ascend ModelZoo-TensorFlow ``TensorFlow/contrib/cv/CSPNet_ID0840_for_TensorFlow``
(commit a2c3332a): same flags, defaults, loss, optimiser, constant learning rate, log lines and FPS rule.
The original reports top-1 0.6605 (GPU) / 0.6645 (Ascend 910) on CIFAR-10 after 50 epochs.

    python train.py --data_path=<cifar-10-batches-py or a parent> --output_path=./checkpoint --epochs=50

Several devices: test/train_*_8p.sh start one process per device through the launcher; see dist.py.
"""
import argparse
import dataclasses
import functools
import os
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

# oneDNN kernels on or off, as a probe measured on this host (TensorFlow reads the setting at import)
from common.tf_onednn import choose_tf_onednn_opts  # noqa: E402

choose_tf_onednn_opts()
import tensorflow as tf  # noqa: E402

import utils
from common import cli, cputune, events, throughput
from common.resume import check_world
from common.digest import weights_digest
from common.progress import Progress
from common.runrecord import KEYS_LOSS_FIRST, CaseLogSpec, case_name, finish_run
from common.summary import EpochSummary, plot_curves
from common.throughput import ThroughputMeter
from models import cspdarknet53
import ckpt
import dist

tf1 = tf.compat.v1
NETWORK = "CSPNet_ID0840_for_TensorFlow"
# ${CaseName}.log and ${CaseName}_loss.txt as the original test/train_*_1p.sh write them: TrainingTime is the
# StepTime line (seconds per step), the loss file holds every "Loss:" line's loss, ActualLoss its last line
CASE_LOG = CaseLogSpec(keys=KEYS_LOSS_FIRST, batch_size="global", training_time="sec_per_step",
                       loss_file="{case}_loss.txt")


# -- flags ----------------------------------------------------------------------------------------------------
def _original_flags(p):
    p.add_argument("--MOMENTUM", default=0.9, type=float)  # the original declared type=int
    p.add_argument("--LAMBDA", default=5e-4, type=float, help="weight of sum(tf.nn.l2_loss) over conv kernels + FC weight")
    p.add_argument("--LEARNING_RATE", default=1e-3, type=float, help="constant learning rate")
    p.add_argument("--epochs", default=5, type=cli.positive_int)
    p.add_argument("--batch_size", default=64, type=cli.positive_int, help="per device")
    p.add_argument("--SUMMARY", default=None, help="TensorBoard event folder (default <output_path>/logs; needs --tensorboard)")
    p.add_argument("--output_path", default="./checkpoint",
                   help="checkpoints, summary.csv, curves.png, run records, events.jsonl")
    p.add_argument("--data_path", default="./dataset", help="cifar-10-batches-py folder or a parent of it")
    p.add_argument("--DISPLAY_STEP", default=1000, type=cli.positive_int,
                   help="print loss/accuracy every N global steps")
    p.add_argument("--VAL_EPOCH", default=5, type=cli.positive_int, help="validate every N epochs (and after the last)")
    p.add_argument("--resume", default="", help="checkpoint to resume from: 'auto' (latest valid in output_path), "
                   "an epoch folder, or a Saver prefix such as checkpoint/cspdarknet53.ckpt")


def _recipe_flags(p):
    p.add_argument("--train_steps", default=None, type=cli.non_negative_int,
                   help=cli.TRAIN_STEPS_HELP + "; 0: no limit")
    p.add_argument("--seed", default=None, type=int, help="graph and data-order seed (default: random, recorded)")
    p.add_argument("--augment", action="store_true", help="opt-in random crop (pad 4) + horizontal flip")
    p.add_argument("--reshuffle", action="store_true", help="opt-in reshuffle every epoch (original: once)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu", "npu"])
    p.add_argument("--mixed_precision", default="auto", choices=["auto", "on", "off"], help=utils.MIXED_PRECISION_HELP)
    p.add_argument("--tensorboard", action="store_true", help="write loss/accuracy event files every step")
    p.add_argument("--eval_batch_size", default=None, type=cli.positive_int,
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
    p.add_argument("--perf", action="store_true", help="a performance run: name the run record ..._perf, not ..._acc")
    p.add_argument("--collective_timeout", default=600, type=float,
                   help="several ranks: seconds a step may wait for the other ranks before the run fails (0: no limit)")
    cli.add_rank_checkpoints(p, "every rank also saves its own final variables (weights, Momentum slots, global "
                                "step) as a Saver checkpoint in <output_path>/rank_<r>/final/, so the ranks' copies "
                                "can be compared; by default rank 0 alone writes checkpoints (former name: "
                                "--save_rank_weights)", "--save_rank_weights")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _original_flags(p)
    _recipe_flags(p)
    args = p.parse_args(argv)
    args.eval_batch_size = args.eval_batch_size or args.batch_size
    if args.collective_timeout < 0:
        p.error("--collective_timeout must be >= 0")
    if args.resume in ("False", "false", "0"):
        args.resume = ""
    elif args.resume in ("True", "true", "1"):  # the original's --resume was a bool
        args.resume = "auto"
    return args


# -- the run's context: device, formulations, ranks, seed ---------------------------------------------------------
@dataclasses.dataclass
class Context:
    device: str
    amp: bool
    conv_impl: str
    bn_impl: str
    cluster: dist.Cluster
    out: Path
    found: Optional[dict]  # the checkpoint rank 0 resumes from (ckpt.find_resume), None for a fresh start
    seed: int


def setup(args):
    device = utils.select_device(args.device)
    amp = utils.mixed_precision(args.mixed_precision, device)
    conv_impl = cspdarknet53.select_conv_impl(args.conv_impl, device)
    bn_impl = cspdarknet53.select_bn_impl(args.bn_impl, device, conv_impl)
    cluster = dist.cluster_from_env(device)
    dist.watch_launcher()
    out = Path(args.output_path).resolve()
    # rank 0 alone reads and writes checkpoints; the other ranks receive its state through the all-reduce
    found = ckpt.find_resume(args.resume, out) if args.resume and cluster.is_chief else None
    if found:  # another rank count would change the global batch and every rank's data shard
        check_world(found["prefix"], found.get("rank_size"), cluster.world)
    seed = args.seed
    if seed is None:  # the checkpoint's, else a fresh one (recorded)
        seed = found.get("seed") if found else None
        seed = int(np.random.SeedSequence().entropy % 2**31) if seed is None else seed
    if found and found.get("seed") not in (None, seed):
        print(f"resume: checkpoint was trained with --seed {found['seed']}, continuing with {seed}")
    if cluster.is_chief:
        cputune.announce()  # the CPU and what was probed on it (oneDNN on/off, conv_impl, bn_impl)
    return Context(device, amp, conv_impl, bn_impl, cluster, out, found, seed)


# -- model, data, loss, optimiser -----------------------------------------------------------------------------
def create_model(args, ctx):
    """The network as a function of the input batch (a TF1 graph is built when it is called)."""
    return functools.partial(cspdarknet53.classifier, num_classes=utils.NUM_CLASSES, conv_impl=ctx.conv_impl,
                             bn_impl=ctx.bn_impl)


@dataclasses.dataclass
class Data:
    x_tr: np.ndarray
    y_tr: np.ndarray
    x_te: np.ndarray
    y_te: np.ndarray
    train_batches: list  # index arrays of the per-device batches, in the run's (seeded) order
    test_batches: list
    steps_per_epoch: int

    def shuffle(self, seed):
        """The original's order: one shuffle for the whole run."""
        batch_size = len(self.train_batches[0])
        self.train_batches = utils.random_batch(len(self.x_tr), batch_size, np.random.RandomState(seed))

    def epoch_batches(self, seed, epoch, reshuffle):
        batches = self.train_batches
        if reshuffle:
            batches = utils.random_batch(len(self.x_tr), len(batches[0]), np.random.RandomState([seed, epoch]))
        return batches[:self.steps_per_epoch]


def create_data(args, ctx):
    """This rank's shard of the training set in per-device batches, and the fixed test batches."""
    x_tr, y_tr, x_te, y_te = utils.load_cifar(args.data_path)
    x_tr, y_tr = dist.shard(x_tr, y_tr, ctx.cluster)
    batches = utils.random_batch(len(x_tr), args.batch_size, np.random.RandomState(ctx.seed))
    data = Data(x_tr, y_tr, x_te, y_te, batches, utils.eval_batches(len(x_te), args.eval_batch_size),
                cli.steps_per_epoch(len(batches), args.train_steps))
    print(f"device {ctx.device}, mixed precision {('bf16' if ctx.device == 'cpu' else 'on') if ctx.amp else 'off'}, "
          f"convolutions {ctx.conv_impl}, normalisation {ctx.bn_impl}, seed {ctx.seed}; {len(x_tr)} train / "
          f"{len(x_te)} test images, {data.steps_per_epoch} batches of {args.batch_size} per epoch")
    if ctx.cluster.distributed:
        print(f"rank {ctx.cluster.rank}/{ctx.cluster.world}: {len(x_tr)} training images, shard sha256 "
              f"{weights_digest([x_tr, y_tr])}; global batch {args.batch_size * ctx.cluster.world}", flush=True)
    return data


def create_loss(args):
    """The original's loss: softmax cross-entropy + LAMBDA * sum of tf.nn.l2_loss over the "weights" collection
    (the conv kernels and the FC weight); returns (loss, l2 term)."""
    def loss_fn(logits, labels):
        with tf.name_scope("cross_entropy"):
            cross_entropy = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        with tf.name_scope("l2_loss"):
            l2_loss = args.LAMBDA * tf.add_n([tf.nn.l2_loss(w) for w in tf1.get_collection("weights")])
        with tf.name_scope("loss"):
            return cross_entropy + l2_loss, l2_loss
    return loss_fn


def create_optimizer(args, ctx):
    """Momentum at the learning rate fed each step, as a function of that rate's tensor (an optimizer is made
    inside the replica step). fp16 with loss scaling on accelerators (on CPU, bf16 is a session rewrite:
    utils.session_config); with HCCL, the all-reduce wrapper."""
    def make(lr):
        opt = tf1.train.MomentumOptimizer(learning_rate=lr, momentum=args.MOMENTUM)
        if ctx.amp and ctx.device != "cpu":
            # the GPU counterpart of Ascend's allow_mix_precision
            opt = tf1.train.experimental.enable_mixed_precision_graph_rewrite(opt)
        return dist.wrap_optimizer(opt, ctx.cluster)
    return make


def build_graph(model, loss_fn, optimizer, seed=None, cluster=None):
    """Placeholders, logits, loss, accuracy and the train op (names as in the original graph).

    With several ranks the network and its train op are built as the replica step of the cluster's
    strategy (one replica per process), so variables are mirrored and gradients all-reduced.
    """
    cluster = cluster or dist.Cluster()
    if seed is not None:
        tf1.set_random_seed(seed)
    x = tf1.placeholder(tf.float32, [None, 32, 32, 3])
    y = tf1.placeholder(tf.float32, [None, utils.NUM_CLASSES])
    lr = tf1.placeholder(tf.float32)
    tower = functools.partial(_tower, x, y, lr, model, loss_fn, optimizer, cluster)
    if cluster.strategy:
        with cluster.strategy.scope():
            g = cluster.strategy.extended.call_for_each_replica(tower)
    else:
        g = tower()
    summaries = tf1.summary.merge([tf1.summary.scalar("loss", g["loss"]), tf1.summary.scalar("l2_loss", g["l2_loss"]),
                                   tf1.summary.scalar("accuracy", g["accuracy"])])
    return dict(g, x=x, y=y, lr=lr, summaries=summaries)


def _tower(x, y, lr, model, loss_fn, optimizer, cluster):
    pred = model(x)
    loss, l2_loss = loss_fn(pred, y)
    with tf.name_scope("accuracy"):
        labels = tf.argmax(y, 1)
        accuracy = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(pred, 1), labels), tf.float32))
        top5 = tf.reduce_mean(tf.cast(tf1.nn.in_top_k(pred, labels, 5), tf.float32))
    global_step = tf1.Variable(0, trainable=False)
    with tf.name_scope("optimizer"):
        opt = optimizer(lr)
        scale = dist.gradient_scale(cluster)
        # minimize() in its two halves, so that the gradients of this replica's batch can be fetched
        grads = opt.compute_gradients(loss * scale if scale != 1.0 else loss)
        train_op = opt.apply_gradients(grads, global_step=global_step)
    return dict(pred=pred, loss=loss, l2_loss=l2_loss, accuracy=accuracy, top5=top5, global_step=global_step,
                train_op=train_op, grads=grads)


def create_session(args, ctx, model, loss_fn, optimizer):
    """The training graph of this rank and a session on its server: the graph dict plus ``sess``, ``saver``,
    ``init``, the cross-rank agreement ops and ``wait`` (run options bounded by --collective_timeout)."""
    tf1.disable_eager_execution()
    if args.seed is not None:
        tf.config.experimental.enable_op_determinism()
    # the strategy and this worker's server must exist before any variable
    target, config = dist.start(ctx.cluster, utils.session_config(ctx.device, ctx.amp))
    g = build_graph(model, loss_fn, optimizer, ctx.seed, ctx.cluster)
    g["init"] = tf1.global_variables_initializer()
    g["head_in"], g["head"] = dist.build_agree(ctx.cluster)
    g["broadcast"] = dist.build_broadcast(ctx.cluster) if ctx.cluster.hccl else None
    g["params"] = sum(int(np.prod(v.shape)) for v in tf1.trainable_variables())
    g["saver"] = tf1.train.Saver(max_to_keep=None)
    g["sess"] = tf1.Session(target=target, config=config)
    # runs that wait on other ranks fail after --collective_timeout instead of hanging
    g["run"] = dist.CollectiveRunner(g["sess"], ctx.cluster, args.collective_timeout)
    return g


# -- resume -----------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class State:
    """Where the run stands: the global step alone gives the epoch and the batches done within it."""
    global_step: int
    epoch: int  # epochs done
    skip: int  # batches of epoch ``epoch`` already done
    seed: int
    val_accuracy: Optional[float] = None
    loss: Optional[float] = None


def resume(args, ctx, g, data):
    """Initialise, restore rank 0's checkpoint, give every rank rank 0's state; emits the ``resume`` event.

    Rank 0 alone decides: it alone reads checkpoints (and alone writes them), so there is no choice to agree
    on. What the other ranks need is rank 0's state, all of it: every global variable (weights, Momentum
    slots, the global step) is broadcast. The network keeps no per-rank state (no BatchNorm moving
    statistics: it normalises over each batch) and the data position and augmentation follow from the seed
    and the global step, so rank 0's checkpoint is the whole state of every rank.
    """
    sess, run, found = g["sess"], g["run"], ctx.found
    # every rank runs the initialiser: under the strategy it broadcasts rank 0's initial values
    run(g["init"])
    if found:
        g["saver"].restore(sess, found["prefix"])
    seed = ctx.seed
    if g["head"] is not None:  # rank 0's seed, whether it restored, and its global step, to every rank
        head = [seed, int(bool(found)), int(sess.run(g["global_step"]))]
        seed, restored, chief_step = (int(v) for v in run(g["head"], {g["head_in"]: head}))
        if seed != ctx.seed:
            data.shuffle(seed)
        if restored:  # built only now, by every rank alike, so a fresh run carries no extra ops
            run(dist.build_broadcast(ctx.cluster))
            got = int(sess.run(g["global_step"]))
            if got != chief_step:  # cannot happen unless the broadcast missed a variable: never train on
                raise RuntimeError(f"resume: rank {ctx.cluster.rank} holds global step {got} after the broadcast, "
                                   f"rank 0 restored {chief_step}")
    elif g["broadcast"]:
        sess.run(g["broadcast"])
    step = int(sess.run(g["global_step"]))
    epoch, skip = divmod(step, data.steps_per_epoch)
    if found:
        print(f"resume: restored {found['prefix']} (epoch {epoch}, global step {step})")
    elif step:
        print(f"resume: rank 0 restored its checkpoint (epoch {epoch}, global step {step})")
    # a rank other than 0 restored nothing itself: it names no checkpoint, only whose state it took; with
    # several ranks each one adds the digest of all its variables (slots and step too), equal on every rank
    extra = {"from_rank": 0} if step and not found else {}
    if ctx.cluster.distributed and step:
        extra["state_digest"] = weights_digest(sess.run(tf1.global_variables()))
    events.emit(ctx.out, "resume", checkpoint=found["prefix"] if found else None, epoch=epoch, global_step=step,
                **extra)
    return State(step, epoch, skip, seed, val_accuracy=found.get("val_accuracy") if found else None)


# -- the epoch loop ------------------------------------------------------------------------------------------------
def train(args, ctx, g, data, state):
    """Epochs from ``state`` to --epochs: train_one_epoch, then (rank 0) validate and save_checkpoint."""
    chief, world, out = ctx.cluster.is_chief, ctx.cluster.world, ctx.out
    run_steps = max(0, args.epochs * data.steps_per_epoch - state.global_step)
    # ranks step in lockstep, so the job's images/sec is one rank's times the number of ranks
    warmup = throughput.warmup_steps(data.steps_per_epoch, max(1, args.epochs - state.epoch))
    meter = ThroughputMeter(args.batch_size, warmup_steps=warmup, world_size=world)
    progress = Progress(run_steps, args.batch_size * world, enabled=chief and sys.stdout.isatty())
    writer = None
    if args.tensorboard and chief:
        writer = tf1.summary.FileWriter(os.path.join(args.SUMMARY or out / "logs", "train"), g["sess"].graph)
    summary = EpochSummary(out / "summary.csv", resume=bool(ctx.found)) if chief else None
    events.emit(out, "initial_weights", digest=weights_digest(g["sess"].run(tf1.trainable_variables())))
    start_time = time.time()
    for e in range(state.epoch, args.epochs):
        epoch_t0 = time.time()
        losses = train_one_epoch(args, ctx, g, data, state, e, meter, progress, writer, start_time)
        if not chief:  # the other ranks go on to the next step and wait for rank 0 in its all-reduce
            continue
        val = val5 = None
        if (e + 1) % args.VAL_EPOCH == 0 or e + 1 == args.epochs:
            print(f"Epoch {e}, validating ....")
            val, val5 = validate(g, data)
            state.val_accuracy = val
            print(f"Elapsed time: {utils.format_time(time.time() - start_time)}")
            print(f"Validation accuracy: {val:.4f}")
        epoch_sec = time.time() - epoch_t0
        summary.add(e, train_loss=float(np.mean(losses)) if losses else None, eval_top1=val, eval_top5=val5,
                    lr=args.LEARNING_RATE, images_per_sec=len(losses) * args.batch_size * world / max(epoch_sec, 1e-9),
                    time_sec=epoch_sec)
        save_checkpoint(args, ctx, g, state, e, announce=val is not None)
    final = weights_digest(g["sess"].run(tf1.trainable_variables())) if ctx.cluster.distributed else None
    if args.rank_checkpoints:  # this rank's own variables, read from its own session (no collective)
        ckpt.save_final(g["sess"], g["saver"], out / f"rank_{ctx.cluster.rank}" / ckpt.FINAL_DIR)
    if writer:
        writer.close()
    return dict(meter=meter, state=state, elapsed=time.time() - start_time, final_digest=final, params=g["params"])


def train_one_epoch(args, ctx, g, data, state, e, meter, progress, writer, start_time):
    """One epoch (the rest of it, resumed mid-way) of at most --train_steps steps; returns its losses."""
    # loss/accuracy are those of the batch before the update (the original re-ran the batch after it)
    fetches = [g["train_op"], g["loss"], g["accuracy"]] + ([g["summaries"]] if writer else [])
    skip = state.skip if e == state.epoch else 0
    losses = []
    for i, idx in enumerate(data.epoch_batches(state.seed, e, args.reshuffle)):
        if i < skip:
            continue
        # one generator per batch, so a resumed run draws the same crops and flips
        images = utils.augment(data.x_tr[idx], np.random.RandomState([state.seed, e, i])) if args.augment \
            else data.x_tr[idx]
        feed = {g["x"]: images.astype(np.float32), g["y"]: data.y_tr[idx], g["lr"]: args.LEARNING_RATE}
        meter.start()
        res = g["run"](fetches, feed)
        meter.stop()
        # counted here: a global_step fetched beside the train op may be read before or after its increment
        state.global_step += 1
        step, (_, loss_v, acc_v) = state.global_step, res[:3]
        if writer:
            writer.add_summary(res[3], step)
        if not np.isfinite(loss_v):
            raise FloatingPointError(f"loss became {loss_v} at global step {step}")
        state.loss = float(loss_v)
        losses.append(state.loss)
        progress.update(e, step, state.loss, args.LEARNING_RATE)
        if step % args.DISPLAY_STEP == 0:
            print("Epoch: {:03d} Step/Batch: {:09d} --- Loss: {:.7f} Training accuracy: {:.4f}".format(
                e, step, loss_v, acc_v))
            print(f"Elapsed time: {utils.format_time(time.time() - start_time)}")
            events.emit(ctx.out, "step", epoch=e + 1, step=i + 1, global_step=step, loss=state.loss)
    progress.end_epoch()
    return losses


def validate(g, data):
    """Mean of per-batch top-1 (and top-5) over the fixed test batches, as the original averaged it."""
    top1, top5 = [], []
    for idx in data.test_batches:
        a, a5 = g["sess"].run([g["accuracy"], g["top5"]],
                              {g["x"]: data.x_te[idx].astype(np.float32), g["y"]: data.y_te[idx]})
        top1.append(a)
        top5.append(a5)
    return float(np.mean(top1)), float(np.mean(top5))


def save_checkpoint(args, ctx, g, state, e, announce):
    """An atomic Saver checkpoint of epoch ``e`` (ckpt.py), then the ``checkpoint`` event."""
    saved = ckpt.save(g["sess"], g["saver"], ctx.out, epoch=e, global_step=state.global_step, seed=state.seed,
                      batch_size=args.batch_size, val_accuracy=state.val_accuracy, rank_size=ctx.cluster.world,
                      eval_batch_size=args.eval_batch_size)
    events.emit(ctx.out, "checkpoint", path=str(saved), epoch=e + 1, global_step=state.global_step)
    if announce:
        print(f"checkpoint saved in file: {ctx.out / ckpt.CKPT_NAME}")


# -- results --------------------------------------------------------------------------------------------------------
def summarize(args, ctx, result):
    """The original's closing lines, then (rank 0) the banner and the run records."""
    meter, state, cluster = result["meter"], result["state"], ctx.cluster
    print(f"Elapsed time: {utils.format_time(result['elapsed'])}")
    print(f"StepTime = {meter.sec_per_step}")
    print(f"FPS = {meter.images_per_sec}")
    if cluster.distributed:
        # every rank prints it: equal digests show the all-reduce kept the replicas identical
        print(f"rank {cluster.rank}/{cluster.world}: final weights sha256 {result['final_digest']}", flush=True)
    if not cluster.is_chief:
        return 0
    print(f"checkpoint saved in file: {ctx.out / ckpt.CKPT_NAME}")
    plot_curves(ctx.out / "summary.csv", ctx.out / "curves.png", title=f"{NETWORK} on {Path(args.data_path).name}")
    finish_run(output_dir=ctx.out, network=NETWORK, case=case_name(NETWORK, args.batch_size, cluster.world, args.perf),
               framework="tensorflow", framework_version=tf.__version__, device=ctx.device, rank_size=cluster.world,
               batch_size=args.batch_size, params=result["params"], epochs=args.epochs, meter=meter, spec=CASE_LOG,
               accuracy=state.val_accuracy if state.val_accuracy is not None else float("nan"), loss=state.loss,
               seed=state.seed,
               extra={"global_step": state.global_step, "mixed_precision": ctx.amp, "augment": args.augment,
                      "reshuffle": args.reshuffle, "learning_rate": args.LEARNING_RATE,
                      "eval_batch_size": args.eval_batch_size, "train_steps": args.train_steps,
                      "data_path": str(Path(args.data_path).resolve()),
                      "all_reduce": "hccl" if cluster.hccl else "tf-collective" if cluster.strategy else None})
    return 0


def main(argv=None):
    args = parse_args(argv)
    ctx = setup(args)
    model = create_model(args, ctx)
    data = create_data(args, ctx)
    loss_fn, optimizer = create_loss(args), create_optimizer(args, ctx)
    g = create_session(args, ctx, model, loss_fn, optimizer)
    with g["sess"]:
        state = resume(args, ctx, g, data)
        result = train(args, ctx, g, data, state)
    return summarize(args, ctx, result)


if __name__ == "__main__":
    cli.run(main, errors=(FloatingPointError, RuntimeError, ValueError), translate=dist.explain_error)
