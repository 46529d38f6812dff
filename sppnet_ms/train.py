"""Train ZFNet, SPPNet single-size or SPPNet multi-size on an ImageNet-style folder with MindSpore.

Mirrors mindspore-ai/models ``research/cv/SPPNet`` (commit eab643f5): graph mode, ``Model`` with momentum SGD,
warm-up + cosine LR, fixed loss scale 1024, top-1/top-5 evaluation after each epoch and ``best.ckpt``.
The original reports ImageNet top-1 0.648 (zfnet), 0.649 (sppnet_single), 0.644 (sppnet_mult).
Every run ends with the ModelZoo banner and writes ``<case>.log`` / ``<case>.json`` (common.runrecord), and
records its resume / initial_weights / step / checkpoint events in ``<output_path or ckpt_path>/events.jsonl``.

The steps, in order: parse_args, setup, create_model, create_data, create_loss, create_optimizer, resume,
train (train_one_epoch -> validate -> save_checkpoint per epoch), summarize. MindSpore is imported inside them,
so ``-h`` and flag errors answer at once.
"""
import argparse
import os
import sys
import time
from pathlib import Path

# `common` lives at the repository root; the shell scripts put it on PYTHONPATH, a bare `python train.py` may not
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import cli, events  # noqa: E402  (after the path set-up above)
from common.runrecord import KEYS_ACCURACY_FIRST, CaseLogSpec  # noqa: E402
from common.checkpoint import CheckpointError  # noqa: E402
from common.imagefolder import ImageFolderError, reader_error_line  # noqa: E402

# expected failures: one 'ERROR:' line and exit 2 (a non-finite loss is a common.cli.RecipeError)
ERRORS = (ImageFolderError, CheckpointError, ValueError, FloatingPointError)
MODELS = ['zfnet', 'sppnet_single', 'sppnet_mult']

# the MindSpore original writes no ${CaseName}.log nor loss file: these are the Ascend ModelZoo form of the
# ResNet-50 and CutMix originals (TrainingTime in ms per step, every logged step loss in the loss file)
CASE_LOG = CaseLogSpec(keys=KEYS_ACCURACY_FIRST, batch_size='global', training_time='ms_per_step',
                       loss_file='train_{case}_loss.txt')


def build_parser():
    p = argparse.ArgumentParser(description='Train ZFNet / SPPNet (MindSpore).')
    _original_flags(p)
    _recipe_flags(p)
    return p


def _original_flags(p):
    p.add_argument('--train_model', default='sppnet_single', choices=MODELS)
    p.add_argument('--train_path', default='./imagenet_original/train',
                   help='training folder (class sub-folders) or its parent holding train/')
    p.add_argument('--eval_path', default='./imagenet_original/val',
                   help='evaluation folder (class sub-folders) or its parent holding val/')
    p.add_argument('--device_target', default='auto', help='Ascend | GPU | CPU | auto (Ascend, else GPU, else CPU)')
    p.add_argument('--ckpt_path', default='./ckpt',
                   help='folder for best.ckpt, epoch checkpoints, summary.csv (and events.jsonl without --output_path)')
    p.add_argument('--dataset_sink_mode', type=cli.str2bool, default=None,
                   help='sink the dataset into the device graph (default: true on Ascend/GPU, false on CPU)')
    p.add_argument('--sink_size', type=int, default=-1, help='steps per epoch; -1 = the whole dataset')
    p.add_argument('--device_id', type=int, default=int(os.environ.get('DEVICE_ID', 0)))
    p.add_argument('--device_num', type=cli.positive_int, default=1)
    p.add_argument('--is_distributed', type=int, default=0, choices=[0, 1])


def _recipe_flags(p):
    # ours; the defaults of the hyper-parameters are the original's values (src/config.py)
    p.add_argument('--epoch_size', type=cli.positive_int, default=None, help='epochs (default: the model config)')
    p.add_argument('--batch_size', type=cli.positive_int, default=None, help='per-device batch (default: config)')
    p.add_argument('--train_steps', type=cli.positive_int, default=None, help=cli.TRAIN_STEPS_HELP)
    p.add_argument('--lr_init', type=float, default=None, help='base learning rate (default: config)')
    p.add_argument('--warmup_epochs', type=float, default=None, help='linear warm-up epochs (default: config)')
    p.add_argument('--num_classes', type=cli.positive_int, default=None,
                   help='classifier outputs (default: the number of class folders in --train_path)')
    p.add_argument('--image_size', type=cli.positive_int, default=224,
                   help='training/eval crop side; sppnet_mult alternates it with 180/224 of it')
    p.add_argument('--keep_prob', type=float, default=None, help='dropout keep probability (default: config)')
    p.add_argument('--init', default='normal', choices=['normal', 'he'],
                   help="weight init: 'normal' = the original's N(0, 0.01); 'he' (opt-in) learns small data faster")
    p.add_argument('--augment', type=cli.str2bool, default=True,
                   help='the original training augmentation; false = eval transforms (tiny smoke/learning runs)')
    p.add_argument('--run_eval', type=cli.str2bool, default=True,
                   help='evaluate after epochs (false: no eval, no best.ckpt; for throughput-only runs)')
    p.add_argument('--seed', type=int, default=None, help='global and dataset seed (default 44)')
    p.add_argument('--amp_level', default='auto', choices=['auto', 'O0', 'O2', 'O3'],
                   help='mixed precision; auto = O2 on Ascend/GPU as the original, O0 on CPU')
    p.add_argument('--gradients_mean', type=cli.str2bool, default=True,
                   help='distributed: average gradients over ranks (false = sum them, as the original)')
    p.add_argument('--resume', default=None, help="checkpoint to resume from, or 'auto' (newest valid in --ckpt_path)")
    p.add_argument('--keep_checkpoint_max', type=cli.positive_int, default=2, help='epoch checkpoints kept for resume')
    cli.add_rank_checkpoints(p, 'distributed: every rank > 0 also writes its epoch checkpoints, to '
                                "<ckpt_path>/rank_<r>/ (to compare the replicas' weights); default: rank 0 only")
    p.add_argument('--eval_interval', type=cli.positive_int, default=1, help='evaluate every N epochs (and the last)')
    p.add_argument('--skip_bad_images', action='store_true',
                   help='skip (and list) unreadable images instead of stopping')
    p.add_argument('--vet_images', type=cli.str2bool, default=True,
                   help='decode every image once before training to find bad files early')
    p.add_argument('--workers', type=cli.positive_int, default=None, help='data pipeline threads')
    p.add_argument('--output_path', default=None,
                   help='folder for <case>.log / <case>.json and events.jsonl (default: --ckpt_path)')
    p.add_argument('--perf', action='store_true', help="a performance run: the run record is '..._perf'")
    p.add_argument('--performance', action='store_true', help=argparse.SUPPRESS)  # before --perf; warns
    p.add_argument('--tensorboard', action='store_true',
                   help='also write MindSpore summary files (loss, lr, accuracy) under <ckpt_path>/summary')


# -- arguments -------------------------------------------------------------------------------------------------
def parse_args(argv=None):
    """The flags, with ``args.cfg``: the model's configuration after the command-line overrides."""
    args = build_parser().parse_args(argv)
    if args.performance:
        print('warning: --performance is deprecated and will be removed; use --perf', file=sys.stderr)
        args.perf = True
    from src.config import resolve_config
    args.cfg = resolve_config(args)
    return args


# -- device, distribution, seeds ----------------------------------------------------------------------------
def setup(args):
    """Graph mode on the device, the data-parallel group, seeds; returns the run context (src/training.py)."""
    import mindspore as ms
    import mindspore.dataset as mds
    from common import cputune
    from src.training import init_device
    ctx = init_device(args)
    if ctx.primary:
        cputune.announce()  # the host's CPU and what was probed on it (oneDNN's ISA level: src/__init__.py)
    ms.set_seed(args.cfg.seed)
    mds.config.set_seed(args.cfg.seed)
    return ctx


# -- network -------------------------------------------------------------------------------------------------
def create_model(args, ctx):
    """SppNet in its training phase; its head has ``--num_classes`` outputs, else one per class folder."""
    from src.dataset import class_names
    from src.sppnet import SppNet
    classes = class_names(args.train_path, 'train')
    num_classes = args.num_classes or len(classes)
    if len(classes) > num_classes:
        raise ImageFolderError(f"{args.train_path}: {len(classes)} class folders but --num_classes {num_classes}")
    return SppNet(num_classes, 'train', True, args.train_model, args.image_size, keep_prob=args.cfg.keep_prob,
                  init=args.init)


# -- data ----------------------------------------------------------------------------------------------------
def create_data(args, ctx):
    """The listed (and vetted) images and their pipelines: a fresh, epoch-seeded training pipeline per epoch."""
    from src.dataset import TrainData
    return TrainData.from_args(args, ctx)


# -- loss, optimiser -----------------------------------------------------------------------------------------
def create_loss(args):
    from mindspore import nn
    return nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction='mean')


def create_optimizer(args, model, data):
    """Momentum SGD over the original's two parameter groups (no weight decay on biases and gamma/beta), with
    the per-step warm-up + cosine schedule; the loss scale is divided back out here (FixedLossScaleManager)."""
    from mindspore import Tensor, nn
    from src.get_param_groups import get_param_groups
    from src.training import learning_rates
    cfg = args.cfg
    return nn.Momentum(get_param_groups(model), learning_rate=Tensor(learning_rates(cfg, data.steps_per_epoch)),
                       momentum=cfg.momentum, weight_decay=cfg.weight_decay, loss_scale=cfg.loss_scale)


def create_trainer(args, ctx, model, loss_fn, optimizer):
    """MindSpore's ``Model``: the train step (AMP level, loss scale) and the top-1/top-5 metrics."""
    from mindspore.train import Model
    from mindspore.train.loss_scale_manager import DynamicLossScaleManager, FixedLossScaleManager
    cfg = args.cfg
    if cfg.is_dynamic_loss_scale:
        scale_manager = DynamicLossScaleManager(65536, 2, 2000)
    else:
        scale_manager = FixedLossScaleManager(cfg.loss_scale, drop_overflow_update=False)
    return Model(model, loss_fn=loss_fn, optimizer=optimizer, metrics={'top_1_accuracy', 'top_5_accuracy'},
                 amp_level=ctx.amp_level, loss_scale_manager=scale_manager, keep_batchnorm_fp32=False)


# -- resume --------------------------------------------------------------------------------------------------
def resume(args, ctx, model, optimizer, data):
    """Weights, momenta, step (hence LR position) and best results of ``--resume`` (a file, or ``auto``: the
    newest readable epoch checkpoint); emits ``initial_weights`` and ``resume`` (also for a fresh start).

    ``auto`` in a job of several ranks: the ranks agree (common.ms.resume: their lists of checkpoint steps,
    all-gathered) on the newest global step every rank can read, and all load that step: rank 0's series
    (which every rank reads; ZFNet/SPPNet have no BatchNorm, so the replicas' state is the same), or with
    ``--rank_checkpoints`` each rank its own copy. A checkpoint of another rank count, or trained on other class
    names than ``data``'s, stops the run (one line)."""
    from common.ms import emit_initial_weights
    from common.ms.resume import agree_resume
    from src.training import TrainState, checkpoint_series, restore
    # the weights as built (seeded: the same on every rank, which DATA_PARALLEL does not broadcast), recorded
    # before a checkpoint replaces them, so a test can compare them across ranks and with a one-device run
    digest = emit_initial_weights(ctx.out_dir, model, ctx.rank)
    who = f"rank {ctx.rank}/{ctx.group_size}: " if ctx.group_size > 1 else ""
    print(f"{who}initial weights sha256 {digest}", flush=True)
    state = TrainState()
    path, params = args.resume, None
    if args.resume == 'auto':
        own = ctx.primary or args.rank_checkpoints
        series = checkpoint_series(args, ctx, ctx.rank if own else 0)
        found = agree_resume(series, lambda p: series._order(p)[0] * data.steps_per_epoch, ctx.group_size,
                             ctx.rank, log=print, own=own)
        path, params = (found.path, found.params) if found else (None, None)
        if path is None:
            ctx.log(f"resume: no valid checkpoint in {args.ckpt_path}, starting from scratch")
    if path:
        state = restore(args, model, optimizer, path, ctx.group_size, params, data.classes)
        ctx.log(f"resume: loaded {path} (epoch {state.epoch}, step {state.global_step})")
    events.emit(ctx.out_dir, 'resume', rank=ctx.rank, checkpoint=os.path.abspath(path) if path else None,
                epoch=state.epoch, global_step=state.global_step)
    return state


# -- the epoch loop ------------------------------------------------------------------------------------------
def train(args, ctx, model, data, loss_fn, optimizer, state):
    """Per epoch: train_one_epoch, validate, save_checkpoint. Returns the loop (src/training.Loop) for summarize."""
    from src.training import Loop
    loop = Loop.create(args, ctx, model, data, create_trainer(args, ctx, model, loss_fn, optimizer), optimizer,
                       state)
    ctx.log(loop.start_message(args, ctx, data, state))
    for epoch in range(state.epoch, args.cfg.epoch_size):
        loss, size, seconds = train_one_epoch(args, ctx, loop, data, epoch)
        res = validate(args, loop, data, epoch, size)
        save_checkpoint(args, ctx, loop, epoch, loss, res, seconds)
    loop.finish(ctx)
    return loop


def train_one_epoch(args, ctx, loop, data, epoch):
    """One ``Model.train`` call of one epoch (``initial_epoch`` keeps MindSpore's epoch numbers, which count sinks in
    sink mode); the StepMonitor callback times, logs and records its steps. Returns (mean loss, input size, seconds)."""
    t0 = time.time()
    dataset, size = data.train(epoch)
    if args.train_model == 'sppnet_mult':
        ctx.log(f"================ Epoch:{epoch + 1} (input {size}) ==================")
    loop.monitor.begin_epoch(epoch + 1, epoch * data.steps_per_epoch, graph_key=size)
    # in sink mode MindSpore counts sinks as epochs: an epoch of n sinks is MindSpore's epochs epoch*n+1..(epoch+1)*n
    # (n = 1 except in a one-epoch sink run, src/training.sink_plan); without sink, n = 1 and one pass is one epoch
    n = loop.sinks_per_epoch
    loop.trainer.train((epoch + 1) * n, dataset, callbacks=[loop.monitor], dataset_sink_mode=ctx.sink,
                       sink_size=loop.sink_size if ctx.sink else -1, initial_epoch=epoch * n)
    loop.progress.end_epoch()
    seconds = time.time() - t0
    loss = loop.monitor.epoch_loss
    # the original's LossMonitor line: the loss of the epoch's last step (in sink mode, of the sink's last step)
    ctx.log(f"epoch: {epoch + 1} step: {data.steps_per_epoch}, loss is {loop.monitor.last_loss:.6f}")
    if ctx.group_size > 1:  # the loss above is rank 0's own batch; each rank reports its own
        print(f"rank {ctx.rank}/{ctx.group_size}: epoch {epoch + 1} mean loss {loss:.7f}", flush=True)
    ctx.log(f"epoch time: {seconds * 1000:.3f} ms, per step time: {seconds * 1000 / data.steps_per_epoch:.3f} ms")
    return loss, size, seconds


def validate(args, loop, data, epoch, size):
    """Top-1/top-5 on the eval folder when due (and best.ckpt, src/eval_callback.py); None when not evaluated.

    The multi-size model is evaluated only after its full-size epochs, as the original."""
    due = (epoch + 1) % args.eval_interval == 0 or epoch + 1 == args.cfg.epoch_size
    if not (args.run_eval and size == data.sizes[0] and due):
        return None
    loop.last_eval = loop.evaluator.run(epoch + 1)
    return loop.last_eval


def save_checkpoint(args, ctx, loop, epoch, loss, res, seconds):
    """The epoch's summary row, then its checkpoint (atomic; emits ``checkpoint``; prunes the oldest). Rank 0
    writes both; another rank, with ``--rank_checkpoints``, only its own checkpoint (<ckpt_path>/rank_<r>/)."""
    if loop.series is None:
        return
    if ctx.primary:  # the summary row first: every checkpoint a resume can pick then has its row
        loop.records.add(epoch + 1, loss, res, seconds)
    global_step = (epoch + 1) * loop.steps_per_epoch
    loop.series.save(loop.train_state(), epoch + 1, global_step, loop.checkpoint_meta(epoch + 1))


# -- summary -------------------------------------------------------------------------------------------------
def summarize(args, ctx, loop):
    """Curves, the banner and the run records (rank 0 only)."""
    import mindspore as ms
    from common.runrecord import case_name, finish_run
    from src.training import NETWORK_NAMES
    if not ctx.primary:
        return 0
    loop.records.plot(f'{args.train_model} ({ctx.target})')
    network = NETWORK_NAMES[args.train_model]
    cfg = args.cfg
    finish_run(output_dir=args.output_path or args.ckpt_path, network=network,
               case=case_name(network, cfg.batch_size, ctx.group_size, args.perf), framework='mindspore',
               framework_version=ms.__version__, device=ctx.target.lower(), rank_size=ctx.group_size,
               batch_size=cfg.batch_size, params=loop.params, epochs=cfg.epoch_size, meter=loop.meter,
               accuracy=loop.accuracy, loss=loop.final_loss, seed=cfg.seed, spec=CASE_LOG,
               extra=loop.record_extra(args, ctx))
    return 0


def main(argv=None):
    args = parse_args(argv)
    ctx = setup(args)
    model = create_model(args, ctx)
    data = create_data(args, ctx)
    loss_fn, optimizer = create_loss(args), create_optimizer(args, model, data)
    state = resume(args, ctx, model, optimizer, data)
    loop = train(args, ctx, model, data, loss_fn, optimizer, state)
    return summarize(args, ctx, loop)


if __name__ == '__main__':
    cli.run(main, errors=ERRORS, translate=reader_error_line)
