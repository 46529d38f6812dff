"""Train ResNet-50 (CIFAR stem) on CIFAR-100 with mmcls 0.25 / mmcv 1.7.

Mirrors Ascend ModelZoo-PyTorch ``Resnet50_Cifar_for_PyTorch`` (a vendored mmclassification v0.23.2) and
its ``tools/train.py`` flags, on the installed mmcls 0.25. Expected accuracy of the default config
(``configs/resnet/resnet50_8xb16_cifar100.py``, 200 epochs, 8x16 images per step): 79.90 top-1
(mmcls model zoo); about 64 top-1 on one device at the same lr and batch 16 (mmpretrain issue #1892),
which is what ``--auto-scale-lr`` addresses.

    python tools/train.py CONFIG [--work-dir DIR] [--data-path DIR] [--device auto|cpu|cuda|npu] ...
    torchrun --nproc_per_node N tools/train.py CONFIG --launcher pytorch ...
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

NETWORK = "Resnet50_cifar_for_PyTorch"
REFERENCE_GLOBAL_BATCH = 128  # the configs' lr is tuned for 8 devices x 16 images


def parse_args(argv=None):
    from mmcv import DictAction

    class MergeDictAction(DictAction):
        """Repeated --cfg-options accumulate (a script's overrides plus the user's) instead of replacing."""

        def __call__(self, parser, namespace, values, option_string=None):
            before = dict(getattr(namespace, self.dest, None) or {})
            super().__call__(parser, namespace, values, option_string)
            setattr(namespace, self.dest, {**before, **getattr(namespace, self.dest)})

    parser = argparse.ArgumentParser(description="Train a classifier (mmcls config)")
    parser.add_argument("config", help="train config file path")
    parser.add_argument("--work-dir", help="the dir to save logs, checkpoints, summaries and the run record")
    parser.add_argument("--resume-from", help="the checkpoint file to resume from")
    parser.add_argument("--resume", metavar="auto|PATH",
                        help="resume from PATH, or 'auto': the newest readable epoch_N.pth in the work dir "
                             "(corrupt ones are skipped and reported; none found starts from scratch)")
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
    parser.add_argument("--train-steps", type=int, default=None,
                        help="cap iterations per epoch by keeping the first steps x batch x ranks training samples")
    parser.add_argument("--tensorboard", action="store_true", help="also write TensorBoard event files")
    parser.add_argument("--perf-report", action="store_true",
                        help="also write train_<CaseName>_perf_report.log as the original 8p scripts did")
    args = parser.parse_args(argv)
    if args.train_steps is not None and args.train_steps <= 0:
        parser.error(f"--train-steps must be positive, got {args.train_steps}")
    if args.resume_from and args.resume:
        parser.error("--resume-from and --resume are alternatives; give one")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from common.cifar import DatasetError
    from common.checkpoint import CheckpointError
    from mmcls_ext.cli import run
    from mmcls_ext.device import DeviceError
    return run(train, args, (DatasetError, CheckpointError, DeviceError, FileNotFoundError))


def train(args) -> int:
    import mmcv
    import torch
    import torch.distributed as dist
    from mmcv.runner import DistSamplerSeedHook, build_optimizer, build_runner
    from mmcls import __version__ as mmcls_version
    from mmcls.apis import init_random_seed, set_random_seed
    from mmcls.core import DistEvalHook, EvalHook
    from mmcls.datasets import build_dataloader, build_dataset
    from mmcls.models import build_classifier
    from common import cputune
    from mmcls_ext.tuning import apply_memory_format, choose_memory_format
    from mmcls.utils import get_root_logger

    import mmcls_ext  # noqa: F401  (registers CIFAR100Local, the runner, the hooks, the safe loader)
    from common.runrecord import case_name, finish_run
    from common.throughput import ThroughputMeter
    from mmcls_ext import hooks
    from mmcls_ext.checkpoint import find_resume
    from mmcls_ext.cli import load_config
    from mmcls_ext.device import dist_backend, resolve_device, set_local_device
    from mmcls_ext.parallel import wrap_model

    # -- config ---------------------------------------------------------------------------------
    cfg = load_config(args.config, args.cfg_options)
    if args.data_path:
        for split in ("train", "val", "test"):
            cfg.data[split].data_prefix = args.data_path
    cfg.work_dir = args.work_dir or cfg.get("work_dir") or str(Path("work_dirs") / Path(args.config).stem)
    config_stem = Path(args.config).stem

    # -- device, distributed, seed --------------------------------------------------------------
    device = resolve_device(args.device)
    distributed = args.launcher == "pytorch"
    if distributed:
        local_index = int(os.environ.get("LOCAL_RANK", args.local_rank))
        set_local_device(device, local_index)
        dist.init_process_group(backend=dist_backend(device))
        rank, world_size = dist.get_rank(), dist.get_world_size()
    else:
        local_index, rank, world_size = args.gpu_id, 0, 1
        set_local_device(device, local_index)
    cfg.device = device
    cfg.gpu_ids = [local_index] if not distributed else list(range(world_size))
    samples_per_gpu = int(cfg.data.samples_per_gpu)
    global_batch = samples_per_gpu * world_size
    if args.auto_scale_lr:
        cfg.optimizer.lr = cfg.optimizer.lr * global_batch / REFERENCE_GLOBAL_BATCH
    if args.train_steps:
        cfg.data.train.max_samples = args.train_steps * global_batch
    seed = init_random_seed(args.seed, device=device)
    seed = seed + rank if args.diff_seed else seed
    set_random_seed(seed, deterministic=args.deterministic)
    cfg.seed = seed

    # -- inputs are read and checked before anything is written --------------------------------
    for explicit in (args.resume_from, args.resume if args.resume != "auto" else None):
        if explicit and not os.path.isfile(explicit):
            raise FileNotFoundError(f"{explicit}: checkpoint to resume from not found")
    train_set = build_dataset(cfg.data.train)
    val_set = None if args.no_validate else build_dataset(cfg.data.val, dict(test_mode=True))

    # -- work dir, logger ------------------------------------------------------------------------
    work_dir = Path(cfg.work_dir).resolve()
    cfg.work_dir = str(work_dir)
    if rank == 0:
        work_dir.mkdir(parents=True, exist_ok=True)
        cfg.dump(str(work_dir / Path(args.config).name))
    timestamp = time.strftime("%Y%m%d_%H%M%S", time.localtime())
    logger = get_root_logger(log_file=str(work_dir / f"{timestamp}.log") if rank == 0 else None,
                             log_level=cfg.log_level)
    logger.info(f"device {device}, ranks {world_size}, seed {seed}, global batch {global_batch}, "
                f"lr {cfg.optimizer.lr:g}\nConfig:\n{cfg.pretty_text}")
    meta = dict(seed=seed, exp_name=Path(args.config).name, config=cfg.pretty_text,
                env_info=f"torch {torch.__version__}, mmcv {mmcv.__version__}, mmcls {mmcls_version}")

    # -- model ------------------------------------------------------------------------------------
    model = build_classifier(cfg.model)
    model.init_weights()
    model.CLASSES = train_set.CLASSES
    # the seeded initial weights, recorded so that runs (e.g. 1 device vs N ranks) can be shown to start alike
    init_digest = _param_digest(model)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    memory_format = choose_memory_format(args.memory_format, device, cfg.model)
    cputune.record("threads", torch.get_num_threads(), "rule", note="torch's intra-op default")
    if rank == 0:
        cputune.announce()  # the CPU and what was probed on it (the memory format)
    if device == "cuda":
        model = model.cuda(local_index)
    elif device == "npu":
        model = model.npu()
    model = apply_memory_format(model, memory_format)

    # -- loaders ------------------------------------------------------------------------------------
    workers = int(cfg.data.workers_per_gpu)
    loader_cfg = dict(samples_per_gpu=samples_per_gpu, workers_per_gpu=workers, num_gpus=1, dist=distributed,
                      round_up=True, seed=seed, pin_memory=device != "cpu",
                      persistent_workers=bool(cfg.data.get("persistent_workers", True)) and workers > 0)
    train_loader = build_dataloader(train_set, **loader_cfg)

    # -- optimiser, mixed precision, wrapper --------------------------------------------------------
    amp = args.amp if args.amp is not None else device in ("cuda", "npu")
    use_apex = amp and device == "npu" and _importable("apex")
    if use_apex:
        # what the Ascend original ran: fused SGD (weight decay on every parameter, as the config's SGD)
        from apex import amp as apex_amp
        from apex.optimizers import NpuFusedSGD
        o = cfg.optimizer
        optimizer = NpuFusedSGD(model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
        model, optimizer = apex_amp.initialize(model, optimizer, opt_level="O2", loss_scale=1024, combine_grad=True)
    else:
        optimizer = build_optimizer(model, cfg.optimizer)
    model = wrap_model(model, device, distributed, local_index)

    # -- runner and hooks -------------------------------------------------------------------------
    cfg.runner.type = "ZooEpochBasedRunner"
    runner = build_runner(cfg.runner, default_args=dict(model=model, batch_processor=None, optimizer=optimizer,
                                                        work_dir=str(work_dir), logger=logger, meta=meta))
    runner.timestamp = timestamp
    optimizer_config = dict(cfg.optimizer_config)
    if use_apex:
        optimizer_config = hooks.ApexOptimizerHook(**optimizer_config)
    elif amp and device == "cpu":
        runner.autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    elif amp:
        runner.grad_scaler = torch.amp.GradScaler(device, init_scale=1024.0)  # the original's static 1024 as start
        runner.autocast = lambda: torch.autocast(device, dtype=torch.float16)
        optimizer_config = hooks.AmpOptimizerHook(runner.grad_scaler, **optimizer_config)
    if args.tensorboard:
        cfg.log_config.hooks = list(cfg.log_config.hooks) + [dict(type="TensorboardLoggerHook")]
    runner.register_training_hooks(cfg.lr_config, optimizer_config, cfg.checkpoint_config, cfg.log_config,
                                   cfg.get("momentum_config", None), custom_hooks_config=cfg.get("custom_hooks"))
    runner.register_hook(hooks.EpochSeedHook(seed, rank if args.diff_seed else 0), priority="VERY_HIGH")
    if distributed:
        runner.register_hook(DistSamplerSeedHook())
    if val_set is not None:
        eval_cfg = dict(cfg.get("evaluation", {}), by_epoch=True)
        if distributed and device == "cpu":
            val_loader = build_dataloader(val_set, **{**loader_cfg, "dist": False, "shuffle": False})
            eval_hook = hooks.RankZeroEvalHook(val_loader, **eval_cfg)
        else:
            val_loader = build_dataloader(val_set, **{**loader_cfg, "shuffle": False, "round_up": False})
            eval_hook = (DistEvalHook if distributed else EvalHook)(val_loader, **eval_cfg)
        runner.register_hook(eval_hook, priority="LOW")
    meter = ThroughputMeter(samples_per_gpu, warmup_steps=_warmup_steps(cfg.runner.max_epochs * len(train_loader)),
                            world_size=world_size)
    throughput = hooks.ThroughputHook(meter)
    runner.register_hook(throughput, priority="LOW")  # after the optimiser step

    # -- resume ---------------------------------------------------------------------------------------
    resume_from = args.resume_from or cfg.get("resume_from")
    if args.resume == "auto":
        resume_from = find_resume(work_dir, log=logger.warning)
        if resume_from is None:
            logger.info(f"resume: no readable checkpoint in {work_dir}, starting from scratch")
    elif args.resume:
        resume_from = args.resume
    summary = hooks.SummaryHook(work_dir, throughput, resume=bool(resume_from), write=rank == 0)
    runner.register_hook(summary, priority="LOW")  # after the eval hook, before the loggers
    runner.register_hook(hooks.ProgressHook(samples_per_gpu, enabled=rank == 0), priority="LOW")
    if resume_from:
        runner.resume(str(resume_from))
    elif cfg.get("load_from"):
        runner.load_checkpoint(cfg.load_from)

    # -- train ------------------------------------------------------------------------------------------
    runner.run([train_loader], cfg.workflow)

    # -- run record (rank 0) ------------------------------------------------------------------------
    sync = _rank_consistency(runner.model, train_loader, logger) if distributed else {}
    if rank == 0:
        perf = config_stem.endswith("_perf")
        case = case_name(NETWORK, global_batch, world_size, perf)
        record = finish_run(output_dir=work_dir, network=NETWORK, case=case,
                   framework="pytorch+mmcls", framework_version=f"torch {torch.__version__}, mmcv {mmcv.__version__}, "
                                                                 f"mmcls {mmcls_version}",
                   device=device, rank_size=world_size, batch_size=samples_per_gpu, params=params,
                   epochs=cfg.runner.max_epochs, meter=meter, accuracy=summary.best_top1, loss=summary.last_loss,
                   seed=seed, extra=dict(config=str(Path(args.config).resolve()), amp=bool(amp), memory_format=memory_format,
                                         apex=bool(use_apex), lr=cfg.optimizer.lr, work_dir=str(work_dir),
                                         data_prefix=str(cfg.data.train.data_prefix),
                                         accuracy_metric="best top-1 over the per-epoch validations (fraction)",
                                         eval_seconds=round(summary.eval_seconds, 3),
                                         initial_param_digest=init_digest, **sync))
        if args.perf_report:
            _write_perf_report(work_dir / f"train_{case}_perf_report.log", record, throughput, summary, len(train_set))
    if distributed:
        dist.destroy_process_group()
    return 0


def _rank_consistency(model, train_loader, logger) -> dict:
    """Digest of every rank's parameters and how many samples two ranks shared in the last epoch.

    Data parallelism is only right if the first are all equal and the second is zero; both go into
    the run record, and a mismatch is logged as an error.
    """
    import torch.distributed as dist
    mine = dict(digest=_param_digest(model), indices=list(iter(train_loader.sampler)))
    everyone = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    digests = [e["digest"] for e in everyone]
    seen, shared = set(), 0
    for e in everyone:
        shared += len(seen & set(e["indices"]))
        seen |= set(e["indices"])
    if len(set(digests)) != 1 or shared:
        logger.error(f"ranks out of step: {len(set(digests))} distinct parameter digests, {shared} shared samples")
    else:
        logger.info(f"ranks in step: identical parameters on all {len(digests)} ranks, no sample shared in the last epoch")
    return dict(rank_param_digests=digests, rank_shared_samples=shared,
                rank_samples_last_epoch=[len(e["indices"]) for e in everyone])


def _param_digest(model) -> str:
    """sha256 of every parameter (float32, in module order)."""
    import hashlib

    import torch
    net = model.module if hasattr(model, "module") else model
    with torch.no_grad():
        flat = torch.cat([p.detach().float().reshape(-1).cpu() for p in net.parameters()])
    return hashlib.sha256(flat.numpy().tobytes()).hexdigest()


def _write_perf_report(path, record, throughput, summary, train_images: int) -> None:
    """The original train_full_8p*.sh report, from measured times instead of scraped log text."""
    from common.checkpoint import atomic_write_text
    meter = throughput.meter
    train_seconds = meter.warmup_seconds + meter.steady_seconds
    images = train_images * record["epochs"]
    rows = {
        "train_training_time": f"{train_seconds:.2f}",
        "train_eval_time": f"{summary.eval_seconds:.2f}",
        "total_time": f"{record['e2e_seconds']:.0f}",
        "training maximum images/sec": f"{record['global_batch_size'] / throughput.min_step_seconds:.2f}"
        if throughput.min_step_seconds else "0",
        "training average images/sec": f"{images / train_seconds:.2f}" if train_seconds else "0",
        "end to end average images/sec": f"{images / record['e2e_seconds']:.2f}" if record["e2e_seconds"] else "0",
    }
    atomic_write_text(path, "".join(f"{k} : {v}\n" for k, v in rows.items()))


def _warmup_steps(total_steps: int) -> int:
    # the first iterations carry allocator growth and thread-pool start-up; keep up to 5 of them apart
    return max(1, min(5, total_steps // 5))


def _importable(name: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(name) is not None


if __name__ == "__main__":
    sys.exit(main())
