"""Train ResNet-50 (CIFAR stem) on CIFAR-100 with mmcls 0.25 / mmcv 1.7.

Mirrors Ascend ModelZoo-PyTorch ``Resnet50_Cifar_for_PyTorch`` (a vendored mmclassification v0.23.2) and
its ``tools/train.py`` flags, on the installed mmcls 0.25. Expected accuracy of the default config
(``configs/resnet/resnet50_8xb16_cifar100.py``, 200 epochs, 8x16 images per step): 79.90 top-1
(mmcls model zoo); about 64 top-1 on one device at the same lr and batch 16 (mmpretrain issue #1892),
which is what ``--auto-scale-lr`` addresses.

    python tools/train.py CONFIG [--work-dir DIR] [--data-path DIR] [--device auto|cpu|cuda|npu] ...
    torchrun --nproc_per_node N tools/train.py CONFIG --launcher pytorch ...

The steps, in the order every recipe of this repository runs them: parse_args, setup, create_model,
create_data, create_optimizer, resume, train (mmcv's runner: ``train_one_epoch`` in mmcls_ext/runner.py, the
``validate`` hook in mmcls_ext/hooks.py), summarize.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

RECIPE = Path(__file__).resolve().parents[1]
for p in (RECIPE, RECIPE.parent):  # mmcls_ext/ and the repo's common/
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import torch  # noqa: E402
from mmcls.apis import init_random_seed, set_random_seed  # noqa: E402
from mmcls.datasets import build_dataset  # noqa: E402
from mmcls.models import build_classifier  # noqa: E402

import mmcls_ext  # noqa: E402,F401  (registers CIFAR100Local, the runner, the hooks, the safe loader)
from common import cli, cputune, events, malloc, throughput  # noqa: E402
from common.runrecord import KEYS_ACCURACY_FIRST, CaseLogSpec, case_name, finish_run  # noqa: E402
from mmcls_ext import hooks, report, training  # noqa: E402
from mmcls_ext.checkpoint import safe_load, save_checkpoint  # noqa: E402
from mmcls_ext.cli import ERRORS, MergeDictAction  # noqa: E402
from mmcls_ext.parallel import unwrap, wrap_model  # noqa: E402
from mmcls_ext.tuning import apply_memory_format, choose_memory_format  # noqa: E402

NETWORK = "Resnet50_cifar_for_PyTorch"
# ${CaseName}.log and train_${CaseName}_loss.txt as the original test/*.sh meant them: TrainingTime in ms per
# step (global batch x 1000 / FPS), the loss of every logged iteration in the loss file (the original grepped
# "Epoch:", which mmcv's "Epoch [e][i/n]" lines never match, so its file stayed empty)
CASE_LOG = CaseLogSpec(keys=KEYS_ACCURACY_FIRST, batch_size="global", training_time="ms_per_step",
                       loss_file="train_{case}_loss.txt")
REFERENCE_GLOBAL_BATCH = 128  # the configs' lr is tuned for 8 devices x 16 images


def main(argv=None) -> int:
    args = parse_args(argv)
    ctx = setup(args)
    model = create_model(args, ctx)
    data = create_data(args, ctx)
    model, optim = create_optimizer(args, ctx, model)
    state = resume(args, ctx, model, optim)
    result = train(args, ctx, data, optim, state)
    return summarize(args, ctx, result)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Train a classifier (mmcls config)")
    parser.add_argument("config", help="train config file path")
    parser.add_argument("--work-dir", help="the dir to save logs, checkpoints, summaries and the run record")
    parser.add_argument("--resume-from", help="the checkpoint file to resume from")
    parser.add_argument("--resume", metavar="auto|PATH",
                        help="resume from PATH, or 'auto': the newest readable epoch_N.pth in the work dir "
                             "(corrupt ones are skipped and reported; none found starts from scratch); on several "
                             "ranks the newest step every rank holds, each rank from its own file of it; implied "
                             "when torchrun restarts the workers (--max-restarts); a checkpoint of another rank "
                             "count is refused")
    parser.add_argument("--no-validate", action="store_true",
                        help="whether not to evaluate the checkpoint during training")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "gpu", "npu"],
                        help="device used for training; auto = npu if torch_npu imports, else cuda, else cpu")
    parser.add_argument("--gpu-id", type=int, default=0, help="id of the device to use (non-distributed)")
    parser.add_argument("--seed", type=int, default=None, help="random seed")
    parser.add_argument("--diff-seed", action="store_true",
                        help="whether or not set different seeds for different ranks")
    parser.add_argument("--deterministic", action="store_true",
                        help="whether to set deterministic options for CUDNN backend")
    parser.add_argument("--cfg-options", nargs="+", action=MergeDictAction,
                        help="override settings in the config, key=value pairs (e.g. data.samples_per_gpu=16); "
                             "may be given several times")
    parser.add_argument("--launcher", choices=["none", "pytorch"], default="none",
                        help="job launcher; 'pytorch' reads RANK/WORLD_SIZE/LOCAL_RANK as set by torchrun")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0)
    # additions to the original's flags
    parser.add_argument("--data-path", help="cifar-100-python folder or a folder holding it "
                                            "(sets data.{train,val,test}.data_prefix)")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                        help="mixed precision; default on for cuda/npu (the original ran apex O2) and off on "
                             "cpu, where --amp means bfloat16 autocast")
    parser.add_argument("--memory-format", default="auto", choices=["auto", "contiguous", "channels_last"],
                        help="network memory format; auto: on cpu what a timed training step on this host "
                             "measured faster, on cuda/npu the original's contiguous (NCHW)")
    parser.add_argument("--auto-scale-lr", action="store_true",
                        help=f"scale optimizer.lr linearly by global batch / {REFERENCE_GLOBAL_BATCH}")
    parser.add_argument("--train-steps", "--train_steps", type=cli.positive_int, default=None,
                        help=cli.TRAIN_STEPS_HELP + "; here: the first steps x batch x ranks training samples")
    parser.add_argument("--perf", action="store_true",
                        help="a performance run: the run record is <CaseName>_perf instead of _acc "
                             "(test/train_performance_*.sh pass it)")
    parser.add_argument("--tensorboard", action="store_true", help="also write TensorBoard event files")
    parser.add_argument("--perf-report", action="store_true",
                        help="also write train_<CaseName>_perf_report.log as the original 8p scripts did")
    cli.add_rank_checkpoints(parser, "at the end every rank also writes its own final weights and optimiser state "
                                     "to <work-dir>/rank<R>_final.pth, so that the ranks' weights can be compared "
                                     "file against file (after the config, or =true)")
    args = parser.parse_args(argv)
    if args.resume_from and args.resume:
        parser.error("--resume-from and --resume are alternatives; give one")
    return args


def setup(args) -> training.Context:
    """Config, device and ranks, seed, the CPU-tuning line; checks the checkpoint named to resume from. Writes
    nothing: resume() makes the work dir and its log, once create_data() has read the inputs."""
    malloc.keep_freed_memory()  # before the model and the first step: freed tensor memory is reused (common/malloc.py)
    cfg = training.load_run_config(args)
    device, distributed, local_index, rank, world_size = training.init_processes(args)
    cfg.device = device
    cfg.gpu_ids = list(range(world_size)) if distributed else [local_index]
    if args.auto_scale_lr:
        cfg.optimizer.lr = cfg.optimizer.lr * int(cfg.data.samples_per_gpu) * world_size / REFERENCE_GLOBAL_BATCH
    seed = init_random_seed(args.seed, device=device)
    seed = seed + rank if args.diff_seed else seed
    set_random_seed(seed, deterministic=args.deterministic)
    cfg.seed = seed
    for explicit in (args.resume_from, args.resume if args.resume != "auto" else None):
        if explicit and not os.path.isfile(explicit):
            raise FileNotFoundError(f"{explicit}: checkpoint to resume from not found")
        if explicit:
            safe_load(explicit)  # unreadable or unsafe: one line now, before the work dir exists
    memory_format = choose_memory_format(args.memory_format, device, cfg.model, int(cfg.data.samples_per_gpu))
    cputune.record("threads", torch.get_num_threads(), "rule", note="torch's intra-op default")
    if rank == 0:
        cputune.announce()  # the CPU and what was probed on it (the memory format)
    return training.Context(cfg=cfg, config_path=Path(args.config), device=device, distributed=distributed,
                            local_index=local_index, rank=rank, world_size=world_size, seed=seed,
                            memory_format=memory_format, work_dir=Path(cfg.work_dir),
                            timestamp=time.strftime("%Y%m%d_%H%M%S", time.localtime()))


def create_model(args, ctx):
    """ResNet-50 (CIFAR stem) from the config with its seeded initial weights, on the device, in the memory
    format setup() chose."""
    model = build_classifier(ctx.cfg.model)
    model.init_weights()
    if ctx.device == "cuda":
        model = model.cuda(ctx.local_index)
    elif ctx.device == "npu":
        model = model.npu()
    return apply_memory_format(model, ctx.memory_format)


def create_data(args, ctx) -> training.Data:
    """The training loader and, unless --no-validate, the validation loader. Reading the data here, before
    anything is written, makes a missing or damaged dataset end the run with nothing on disk."""
    cfg = ctx.cfg
    if args.train_steps:
        # at most N steps per epoch: the first N global batches of the training set, the same ones every epoch
        cfg.data.train.max_samples = args.train_steps * ctx.global_batch
    train_set = build_dataset(cfg.data.train)
    val_set = None if args.no_validate else build_dataset(cfg.data.val, dict(test_mode=True))
    train_loader, val_loader = training.build_loaders(ctx, train_set, val_set)
    return training.Data(train_set, train_loader, val_loader,
                         steps_per_epoch=cli.steps_per_epoch(len(train_loader), args.train_steps))


def create_optimizer(args, ctx, model):
    """(model, optim): the config's SGD (apex's fused SGD + O2 on an NPU with apex, as the original), the
    mixed-precision step of --amp, and the model wrapped for one or several processes."""
    model, optim = training.optimizer_and_amp(args.amp, ctx, model)
    # after apex.amp.initialize, which must see the bare model
    return wrap_model(model, ctx.device, ctx.distributed, ctx.local_index), optim


def resume(args, ctx, model, optim) -> training.State:
    """The runner (mmcv's loop, which owns the epoch and iteration counters) from scratch, from the config's
    load_from weights, or from a checkpoint; every rank emits a "resume" event saying which. The checkpoint is
    chosen (on several ranks: agreed, see mmcls_ext/resume.py) and its rank count checked before anything is
    written."""
    notes = []  # what choosing the checkpoint had to say, logged once the log exists
    checkpoint = training.checkpoint_to_resume(args, ctx, notes.append)
    logger = training.open_work_dir(ctx)  # the inputs were read: from here on the run writes
    for note in notes:
        logger.warning(note)
    runner = training.build_runner(ctx, model, optim, logger)
    if checkpoint:
        runner.resume(str(checkpoint))
    elif ctx.cfg.get("load_from"):
        runner.load_checkpoint(ctx.cfg.load_from)
    events.emit(ctx.work_dir, "resume", rank=ctx.rank, epoch=runner.epoch, global_step=runner.iter,
                checkpoint=str(Path(checkpoint).resolve()) if checkpoint else None)
    return training.State(runner, str(checkpoint) if checkpoint else None)


def train(args, ctx, data, optim, state) -> training.Result:
    """The epoch loop, run by mmcv's runner: ``train_one_epoch`` (mmcls_ext/runner.py), then at each epoch's end
    the ``validate`` hook (mmcls_ext/hooks.py) and mmcv's checkpoint hook (the runner's ``save_checkpoint``,
    which emits the "checkpoint" event). The hooks below time, summarise and emit the "step" events."""
    runner, cfg = state.runner, ctx.cfg
    unwrap(runner.model).CLASSES = data.train_set.CLASSES
    training.register_training_hooks(args, ctx, runner, optim)
    if data.val_loader is not None:
        runner.register_hook(hooks.validate(data.val_loader, cfg.get("evaluation", {}), ctx.distributed,
                                            ctx.device), priority="LOW")
    epochs_to_run = max(1, cfg.runner.max_epochs - runner.epoch)
    meter = throughput.ThroughputMeter(ctx.samples_per_gpu, world_size=ctx.world_size,
                                       warmup_steps=throughput.warmup_steps(data.steps_per_epoch, epochs_to_run))
    speed = hooks.ThroughputHook(meter)
    runner.register_hook(speed, priority="LOW")  # after the optimiser step
    summary = hooks.SummaryHook(ctx.work_dir, speed, resume=state.checkpoint is not None, write=ctx.rank == 0)
    runner.register_hook(summary, priority="LOW")  # after the eval hook, before the loggers
    runner.register_hook(hooks.ProgressHook(ctx.samples_per_gpu, enabled=ctx.rank == 0), priority="LOW")
    emitter = hooks.EventsHook(ctx.work_dir, cfg.log_config.interval, ctx.rank)
    runner.register_hook(emitter, priority="LOW")  # every rank: a kill test finds each rank's pid in its steps
    runner.run([data.train_loader], cfg.workflow)
    return training.Result(runner, optim, meter, speed, summary, emitter.initial_digest, data.train_loader,
                           train_images=len(data.train_set))


def summarize(args, ctx, result) -> int:
    """Rank 0: the banner and the run records (<CaseName>.log/.json; _perf with --perf, else _acc). Every rank:
    its rank<R>_final.pth with --rank-checkpoints."""
    runner = result.runner
    if args.rank_checkpoints:
        ctx.work_dir.mkdir(parents=True, exist_ok=True)
        save_checkpoint(runner.model, ctx.work_dir / f"rank{ctx.rank}_final.pth", runner.optimizer,
                        meta=dict(rank=ctx.rank, epoch=runner.epoch, iter=runner.iter))
    sync = report.rank_consistency(runner.model, result.train_loader, runner.logger) if ctx.distributed else {}
    if ctx.rank == 0:
        cfg, net = ctx.cfg, unwrap(runner.model)
        case = case_name(NETWORK, ctx.global_batch, ctx.world_size, args.perf)
        record = finish_run(
            output_dir=ctx.work_dir, network=NETWORK, case=case, framework="pytorch+mmcls",
            framework_version=training.framework_version(), device=ctx.device, rank_size=ctx.world_size,
            batch_size=ctx.samples_per_gpu, params=sum(p.numel() for p in net.parameters() if p.requires_grad),
            epochs=cfg.runner.max_epochs, meter=result.meter, accuracy=result.summary.best_top1,
            loss=result.summary.last_loss, seed=ctx.seed, spec=CASE_LOG,
            extra=dict(config=str(ctx.config_path.resolve()), amp=result.optim.amp, memory_format=ctx.memory_format,
                       apex=result.optim.apex, lr=cfg.optimizer.lr, work_dir=str(ctx.work_dir),
                       data_prefix=str(cfg.data.train.data_prefix),
                       accuracy_metric="best top-1 over the per-epoch validations (fraction)",
                       eval_seconds=round(result.summary.eval_seconds, 3),
                       initial_param_digest=result.initial_digest, **sync))
        if args.perf_report:
            report.write_perf_report(ctx.work_dir / f"train_{case}_perf_report.log", record, result.throughput,
                                     result.summary, result.train_images)
    if ctx.distributed:
        import torch.distributed as dist
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    cli.run(main, errors=ERRORS)
