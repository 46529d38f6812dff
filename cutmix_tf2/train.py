"""Train ResNet-20 v1 with CutMix on CIFAR-10 (tf-keras, tf.data).

Rebuild of Ascend ModelZoo ``cutmix_ID2502_for_TensorFlow2.X``, itself a port of the keras-io example
``examples/vision/cutmix.py`` (Sayan Nath, 2021-06-08). keras-io reports 80.36 % test accuracy after
15 epochs with CutMix (72.70 % without). Unlike the original, the trained model is saved
(per-epoch checkpoints, ``model.h5`` and ``saved_model/``), and runs can be resumed.

    python train.py --data_dir=<cifar-10-batches-py or its parent> --output_path=out [--epochs=15]
"""
from __future__ import annotations

import hashlib
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
RECIPE_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(RECIPE_DIR))
if str(RECIPE_DIR.parent) not in sys.path:
    sys.path.insert(1, str(RECIPE_DIR.parent))

# oneDNN kernels on or off, as a probe measured on this host (TensorFlow reads the setting at import; a
# TF_ENABLE_ONEDNN_OPTS of the user's is kept)
from common.tf_onednn import choose_tf_onednn_opts  # noqa: E402

choose_tf_onednn_opts()

# runrecord: imported now, E2E duration counts from here when no launching script exported its start
from common import cli, cputune, events, runrecord, throughput  # noqa: E402
from common.checkpoint import CheckpointError  # noqa: E402
from common.cifar import DatasetError  # noqa: E402
from common.digest import weights_digest  # noqa: E402
from src import options, runtime  # noqa: E402
from src.data import NUM_CLASSES, one_hot, shard  # noqa: E402

NETWORK = "cutmix_ID2502_for_TensorFlow2.X"
# ${CaseName}.log and train_${CaseName}_loss.txt as the original test/*.sh write them: TrainingTime in ms per
# step (BatchSize x RankSize x 1000 / FPS, BatchSize per device), the loss file one training loss per epoch
# line ("val_loss" lines), "Final Training Duration sec" printed before the banner
CASE_LOG = runrecord.CaseLogSpec(keys=runrecord.KEYS_ACCURACY_FIRST, batch_size="per_device",
                                 training_time="ms_per_step", loss_file="train_{case}_loss.txt", duration_line=True)
# expected failures below main(): one "ERROR: <file>: <problem>" line and exit 2 (common.cli)
ERRORS = (CheckpointError, DatasetError)
# s a worker other than the chief waits before exiting on a refused checkpoint (see resume)
REFUSAL_DELAY = 3
# HDF5 is the original's model format: keep it without tf-keras' "legacy format" warning on every run
warnings.filterwarnings("ignore", message="You are saving your model as an HDF5 file")


def main(argv=None) -> int:
    args = parse_args(argv)
    ctx = setup(args)
    model = create_model(args, ctx)
    data = create_data(args, ctx)
    create_optimizer(args, ctx, model)
    state = resume(args, ctx, model)
    result = train(args, ctx, model, data, state)
    return summarize(args, ctx, result)


def parse_args(argv=None):
    """The original's flags and ours (src/options.py) over the config file's defaults."""
    return options.parse(argv, description=__doc__.split("\n")[0])


# -- setup: inputs first (numpy only: bad input fails before TensorFlow starts and before anything is written)
def setup(args) -> runtime.Context:
    """Rank, checked inputs, device and precision, output folder, distribution strategy, seeds."""
    if hasattr(sys.stdout, "reconfigure"):  # log lines reach train_<id>.log (a pipe) as they happen
        sys.stdout.reconfigure(line_buffering=True)
    rank, world = runtime.cluster_info()
    arrays = runtime.check_inputs(args)
    import tensorflow as tf
    import tf_keras as keras
    from src import device as dev

    device = dev.select_device(args.device)
    dev.check_npu_flags(args, device)
    precision = dev.resolve_precision(device, args.precision_mode)
    out = runtime.make_output_dir(args.output_path)
    if device == "npu":
        dev.open_npu(args)
    policy = dev.apply_precision(device, precision)
    strategy = tf.distribute.MultiWorkerMirroredStrategy() if world > 1 else tf.distribute.get_strategy()
    # the original seeds numpy and TensorFlow; tf-keras' unseeded initialisers draw from Python's `random`,
    # so it is seeded too, or the initial weights would differ from run to run
    keras.utils.set_random_seed(args.seed)
    ctx = runtime.Context(rank=rank, world=world, arrays=arrays, out=out, device=device, policy=policy,
                          strategy=strategy, keep_rank_files=args.rank_checkpoints)
    x_train, x_test = arrays[0], arrays[2]
    ctx.say(f"cutmix_tf2: device={device} precision={policy} workers={world} cutmix={not args.no_cutmix} "
            f"eval_static={args.eval_static} batch_size={args.batch_size} epochs={args.epochs} seed={args.seed} "
            f"train={len(x_train)} test={len(x_test)} data={args.data_dir}")
    if ctx.is_chief:
        cputune.announce()  # the CPU and what was probed on it (TensorFlow's oneDNN kernels on or off)
    return ctx


# -- model: initial weights saved then reloaded, as the original does
def create_model(args, ctx):
    from src.model import resnet_v1

    with ctx.strategy.scope():
        model = resnet_v1(input_shape=ctx.arrays[0].shape[1:], num_classes=NUM_CLASSES)
        init_path = ctx.out / "initial_weights.h5" if ctx.is_chief else ctx.out / f".initial_weights.rank{ctx.rank}.h5"
        model.save_weights(str(init_path))
        model.load_weights(str(init_path))
        if not ctx.is_chief:
            init_path.unlink()
    return model


# -- data: this worker's shard of the training set, the test set
def create_data(args, ctx) -> runtime.Data:
    from src import pipeline

    x_train, y_train, x_test, y_test, names = ctx.arrays
    drop = args.eval_static or ctx.world > 1  # several workers: whole global batches, the same steps everywhere
    global_batch = args.batch_size * ctx.world
    steps = cli.steps_per_epoch(pipeline.steps_per_epoch(len(x_train) // ctx.world, args.batch_size, drop),
                                args.train_steps)
    if steps == 0:
        raise cli.RecipeError(f"{args.data_dir}: {len(x_train)} training images do not fill one batch of "
                              f"{global_batch}")
    if drop and len(x_test) < global_batch:
        raise cli.RecipeError(f"{args.data_dir}: {len(x_test)} test images do not fill one batch of {global_batch}")
    x_shard, y_shard = shard(x_train, y_train, ctx.rank, ctx.world)
    y_shard = one_hot(y_shard)
    opts = dict(batch_size=args.batch_size, use_cutmix=not args.no_cutmix, drop_remainder=drop, steps=steps,
                shuffle_baseline=args.shuffle_baseline)

    def train_from(first_epoch):
        if ctx.world == 1:
            return pipeline.train_dataset(x_shard, y_shard, first_epoch, args.epochs, args.seed, **opts)
        # each worker feeds its own shard at the per-device batch
        return ctx.strategy.distribute_datasets_from_function(lambda _: pipeline.train_dataset(
            x_shard, y_shard, first_epoch, args.epochs, args.seed + ctx.rank, **opts))

    test_ds = pipeline.test_dataset(x_test, one_hot(y_test), global_batch, drop_remainder=drop)
    shard_info = None  # one worker reads the whole set: nothing to tell apart, no hashing at start-up
    if ctx.world > 1:
        shard_info = {"size": len(x_shard), "sha256": hashlib.sha256(x_shard.tobytes()).hexdigest()[:16]}
        print(f"rank {ctx.rank}/{ctx.world}: {shard_info['size']} training images, shard sha256 "
              f"{shard_info['sha256']}", flush=True)
    if args.save_samples and ctx.is_chief:
        from src.samples import save_grid
        sample_x, sample_y = next(iter(pipeline.train_epoch(x_shard, y_shard, 0, args.seed, 16,
                                                            use_cutmix=not args.no_cutmix,
                                                            shuffle_baseline=args.shuffle_baseline)))
        ctx.say(f"wrote {save_grid(sample_x.numpy(), sample_y.numpy(), names, ctx.out / 'cutmix_samples.png')}")
    return runtime.Data(train=train_from, test=test_ds, steps=steps, global_batch=global_batch, shard=shard_info)


# -- loss and optimiser: the original's compile
def create_optimizer(args, ctx, model):
    """Categorical cross-entropy, Adam with Keras defaults, accuracy (src.model.compile_model)."""
    from src.model import compile_model

    with ctx.strategy.scope():
        compile_model(model)
    return model.optimizer


# -- resume: weights, Adam state and epochs done
def resume(args, ctx, model) -> runtime.State:
    """From --resume (auto: the newest valid checkpoint, if any); the ``resume`` event, a fresh start too.

    Several workers with ``auto``: every worker lists the steps it can read and they agree on one by an
    all-gather (runtime.agree_checkpoint), so all restore the same step. The shared state (weights, Adam's
    moments and step count, all mirrored) is the same in every worker's checkpoint of a step; each worker then
    puts back its replica's own BatchNorm moving statistics from its own checkpoint of that step (local.npz).
    A checkpoint written by a job of another rank count is refused (common.resume.check_world)."""
    import tensorflow as tf
    from common.resume import check_world
    from src import checkpointing

    ckpt, first_epoch, global_step = None, 0, 0
    if args.resume:
        try:
            if args.resume == "auto" and ctx.world > 1:
                ckpt = runtime.agree_checkpoint(ctx)
            else:
                ckpt = runtime.find_checkpoint(args, ctx)
            if ckpt is not None:
                try:
                    check_world(ckpt, checkpointing.verify(ckpt).get("world"), ctx.world)
                except cli.RecipeError:
                    if not ctx.is_chief:
                        # every rank refuses, at the same moment; the launcher stops the job at the first exit,
                        # so the others wait for the chief's line (the one the launcher echoes) to be written
                        time.sleep(REFUSAL_DELAY)
                    raise
                with ctx.strategy.scope():
                    first_epoch = checkpointing.restore(ckpt, model)
                if ctx.world > 1:
                    own = runtime.own_checkpoint(ctx, ckpt, first_epoch)
                    if own is not None:
                        checkpointing.restore_local(own, model, ctx.strategy)
                    else:  # e.g. a finished job continued: rank 1's series was deleted at its end
                        print(f"resume: rank {ctx.rank} has no checkpoint of its own of epoch {first_epoch}: its "
                              f"BatchNorm moving statistics start from the mean over the ranks", flush=True)
                global_step = int(model.optimizer.iterations.numpy())
                ctx.say(f"resume: restored {ckpt} (epoch {first_epoch} done)")
        except (CheckpointError, tf.errors.OpError, AssertionError) as exc:
            raise cli.RecipeError(f"{args.resume}: cannot resume ({str(exc).splitlines()[0]})") from None
    if first_epoch >= args.epochs:
        raise cli.RecipeError(f"{args.resume}: checkpoint has already done {first_epoch} of --epochs {args.epochs}")
    # every worker: the checkpoint it restored and its step (the workers of a job must agree)
    events.emit(ctx.out, "resume", rank=ctx.rank, checkpoint=None if ckpt is None else str(ckpt), epoch=first_epoch,
                global_step=global_step)
    return runtime.State(epoch=first_epoch, global_step=global_step, checkpoint=ckpt)


# -- the epoch loop
def train(args, ctx, model, data, state) -> runtime.Result:
    """Every remaining epoch in one Keras fit, as the original calls it: each epoch runs train_one_epoch's steps,
    then validate (the test set, fit's validation_data), then the epoch-end callbacks: save_checkpoint and the
    summary row (src/callbacks.py). One call, not one per epoch: a new input pipeline costs 0.2-0.5 s of
    tracing and start-up at the head of every epoch, and inside one fit the next epoch's first batches are
    prepared while the test set is evaluated."""
    from common.throughput import ThroughputMeter
    from src.callbacks import make_callbacks
    from src.model import count_params

    # the whole first epoch is warm-up when more than one runs (common.throughput: the one rule)
    meter = ThroughputMeter(data.global_batch, world_size=1,
                            warmup_steps=throughput.warmup_steps(data.steps, args.epochs - state.epoch))
    callbacks = make_callbacks(args, ctx, data, state, meter)
    # every worker: the weights it starts from (all workers of a job must agree) and the training images it
    # reads (its shard; the tests recompute it); by the time of this event every worker has joined the job
    events.emit(ctx.out, "initial_weights", digest=weights_digest(w.numpy() for w in model.trainable_weights),
                shard=data.shard)
    history = model.fit(data.train(state.epoch), validation_data=data.test, epochs=args.epochs,
                        initial_epoch=state.epoch, steps_per_epoch=data.steps, callbacks=callbacks,
                        verbose=2 if ctx.is_chief else 0)
    runtime.save_model(ctx, model)
    return runtime.Result(history=history.history, meter=meter, params=count_params(model), steps=data.steps,
                          first_epoch=state.epoch, global_step=int(model.optimizer.iterations.numpy()))


# -- summary: banner, ${CaseName}.log and .json (rank 0)
def summarize(args, ctx, result) -> int:
    if not ctx.is_chief:
        return 0
    import tensorflow as tf
    import tf_keras as keras

    suffix = "" if not args.perf else ("_static_eval" if args.eval_static else "_dynamic_eval")
    h, (trainable, total) = result.history, result.params
    case = runrecord.case_name(NETWORK, args.batch_size, ctx.world, args.perf, suffix)
    runrecord.finish_run(
        output_dir=ctx.out, network=NETWORK, case=case, framework="tensorflow",
        framework_version=f"{tf.__version__} (tf-keras {keras.__version__})", device=ctx.device,
        rank_size=ctx.world, batch_size=args.batch_size, params=trainable, epochs=args.epochs, meter=result.meter,
        accuracy=h["val_accuracy"][-1], loss=h["loss"][-1], losses=h["loss"], seed=args.seed, spec=CASE_LOG,
        global_step=result.global_step,
        extra={"total_params": total, "precision": ctx.policy, "cutmix": not args.no_cutmix,
               "eval_static": args.eval_static, "steps_per_epoch": result.steps, "first_epoch": result.first_epoch,
               "val_loss": h["val_loss"][-1], "config": dict(vars(args))})
    return 0


if __name__ == "__main__":
    cli.run(main, errors=ERRORS)
