"""The mmcv / mmcls plumbing behind the steps of tools/train.py: what setup() decides (``Context``), the work
dir and its log, the loaders, the optimiser with its mixed-precision step, the runner and mmcv's own training
hooks."""
from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from .checkpoint import find_resume
from .cli import load_config
from .device import dist_backend, resolve_device, set_local_device

LOG_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"  # mmcv's


@dataclass
class Context:
    """What setup() decided, handed to every later step."""
    cfg: Any                 # the mmcv Config with the command line's overrides
    config_path: Path
    device: str              # cpu | cuda | npu
    distributed: bool
    local_index: int         # this process's device index
    rank: int
    world_size: int
    seed: int
    memory_format: str       # contiguous | channels_last
    work_dir: Path           # made by open_work_dir() only, once the inputs were read
    timestamp: str           # names the log files

    @property
    def samples_per_gpu(self) -> int:
        return int(self.cfg.data.samples_per_gpu)

    @property
    def global_batch(self) -> int:
        return self.samples_per_gpu * self.world_size


@dataclass
class Data:
    train_set: Any
    train_loader: Any
    val_loader: Any          # None with --no-validate
    steps_per_epoch: int


@dataclass
class Optim:
    optimizer: Any
    hook: Any                # mmcv's optimizer_config, or the hook that does the mixed-precision step
    amp: bool = False
    apex: bool = False
    autocast: Optional[Callable] = None   # zero-argument callable: the training forward's autocast context
    grad_scaler: Any = None


@dataclass
class State:
    runner: Any
    checkpoint: Optional[str]  # what the run resumed from; None for a fresh start


@dataclass
class Result:
    runner: Any
    optim: Optim
    meter: Any
    throughput: Any
    summary: Any
    initial_digest: Optional[str]
    train_loader: Any
    train_images: int


def framework_version() -> str:
    import mmcv
    from mmcls import __version__ as mmcls_version
    return f"torch {torch.__version__}, mmcv {mmcv.__version__}, mmcls {mmcls_version}"


# -- setup ----------------------------------------------------------------------------------------------------
def load_run_config(args):
    """The config with --cfg-options and --data-path applied and the work dir resolved (not created)."""
    cfg = load_config(args.config, args.cfg_options)
    if args.data_path:
        for split in ("train", "val", "test"):
            cfg.data[split].data_prefix = args.data_path
    work_dir = args.work_dir or cfg.get("work_dir") or str(Path("work_dirs") / Path(args.config).stem)
    cfg.work_dir = str(Path(work_dir).resolve())
    return cfg


def init_processes(args):
    """(device, distributed, local device index, rank, world size); joins the process group under torchrun."""
    import torch.distributed as dist
    device = resolve_device(args.device)
    if args.launcher != "pytorch":
        set_local_device(device, args.gpu_id)
        return device, False, args.gpu_id, 0, 1
    local_index = int(os.environ.get("LOCAL_RANK", args.local_rank))
    set_local_device(device, local_index)
    restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
    if restart > 0:
        # torchrun's static rendezvous keeps its store across restarts, and the process group's keys (the gloo
        # peers' addresses) carry no restart count: restarted workers could read the dead workers' addresses
        # (seen: "connectFullMesh ... Connection refused"). A prefix per restart gives each round fresh keys.
        from datetime import timedelta
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"  # torchrun's agent hosts the store
        store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                              is_master=not agent and rank == 0, timeout=timedelta(minutes=30))
        dist.init_process_group(backend=dist_backend(device), store=dist.PrefixStore(f"mz_restart{restart}", store),
                                rank=rank, world_size=world)
    else:
        dist.init_process_group(backend=dist_backend(device))
    return device, True, local_index, dist.get_rank(), dist.get_world_size()


def open_work_dir(ctx: Context):
    """Rank 0 makes the work dir and saves the resolved config in it. Returns mmcls' root logger, which
    writes ``<timestamp>.log`` there on rank 0 (and only errors, to the console, on the other ranks)."""
    from mmcls.utils import get_root_logger
    if ctx.rank == 0:
        ctx.work_dir.mkdir(parents=True, exist_ok=True)
        ctx.cfg.dump(str(ctx.work_dir / ctx.config_path.name))
    log_file = str(ctx.work_dir / f"{ctx.timestamp}.log") if ctx.rank == 0 else None
    logger = get_root_logger(log_file=log_file, log_level=ctx.cfg.log_level)
    logger.info(f"device {ctx.device}, ranks {ctx.world_size}, seed {ctx.seed}, global batch {ctx.global_batch}, "
                f"lr {ctx.cfg.optimizer.lr:g}\nConfig:\n{ctx.cfg.pretty_text}")
    return logger


# -- data -----------------------------------------------------------------------------------------------------
def build_loaders(ctx: Context, train_set, val_set):
    """(train loader, val loader or None) with the config's workers; the recipe's sampler seeding."""
    from mmcls.datasets import build_dataloader
    workers = int(ctx.cfg.data.workers_per_gpu)
    options = dict(samples_per_gpu=ctx.samples_per_gpu, workers_per_gpu=workers, num_gpus=1, dist=ctx.distributed,
                   round_up=True, seed=ctx.seed, pin_memory=ctx.device != "cpu",
                   persistent_workers=bool(ctx.cfg.data.get("persistent_workers", True)) and workers > 0)
    train_loader = build_dataloader(train_set, **options)
    if val_set is None:
        return train_loader, None
    if ctx.distributed and ctx.device == "cpu":  # rank 0 evaluates the whole set (hooks.validate)
        return train_loader, build_dataloader(val_set, **{**options, "dist": False, "shuffle": False})
    return train_loader, build_dataloader(val_set, **{**options, "shuffle": False, "round_up": False})


# -- optimiser ------------------------------------------------------------------------------------------------
def optimizer_and_amp(amp_flag: Optional[bool], ctx: Context, model):
    """(model, Optim): the config's optimiser and the mixed-precision step of --amp (default: on for cuda/npu;
    on cpu it means bfloat16 autocast). apex (NPU) returns its own model, so wrap the model after this."""
    from mmcv.runner import build_optimizer

    from .hooks import AmpOptimizerHook, ApexOptimizerHook
    cfg, device = ctx.cfg, ctx.device
    amp = bool(amp_flag if amp_flag is not None else device in ("cuda", "npu"))
    optim = Optim(optimizer=None, hook=dict(cfg.optimizer_config), amp=amp,
                  apex=amp and device == "npu" and importlib.util.find_spec("apex") is not None)
    if optim.apex:
        # what the Ascend original ran: fused SGD (weight decay on every parameter, as the config's SGD)
        from apex import amp as apex_amp
        from apex.optimizers import NpuFusedSGD
        o = cfg.optimizer
        optimizer = NpuFusedSGD(model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
        model, optim.optimizer = apex_amp.initialize(model, optimizer, opt_level="O2", loss_scale=1024,
                                                     combine_grad=True)
        optim.hook = ApexOptimizerHook(**optim.hook)
        return model, optim
    optim.optimizer = build_optimizer(model, cfg.optimizer)
    if amp and device == "cpu":
        optim.autocast = functools.partial(torch.autocast, "cpu", dtype=torch.bfloat16)
    elif amp:
        optim.grad_scaler = torch.amp.GradScaler(device, init_scale=1024.0)  # the original's static 1024 as start
        optim.autocast = functools.partial(torch.autocast, device, dtype=torch.float16)
        optim.hook = AmpOptimizerHook(optim.grad_scaler, **optim.hook)
    return model, optim


# -- runner ---------------------------------------------------------------------------------------------------
def build_runner(ctx: Context, model, optim: Optim, logger):
    """``ZooEpochBasedRunner`` with the config's runner settings (mmcv's runner makes the work dir on every rank)."""
    from mmcv.runner import build_runner as mmcv_build_runner
    meta = dict(seed=ctx.seed, exp_name=ctx.config_path.name, config=ctx.cfg.pretty_text,
                env_info=framework_version())
    return mmcv_build_runner(dict(ctx.cfg.runner, type="ZooEpochBasedRunner"), default_args=dict(
        model=model, batch_processor=None, optimizer=optim.optimizer, work_dir=str(ctx.work_dir),
        logger=logger, meta=meta, autocast=optim.autocast, grad_scaler=optim.grad_scaler,
        timestamp=ctx.timestamp))


def restarted_by_torchrun(args) -> bool:
    """True in the workers torchrun started again after a worker failed (``--max-restarts`` > 0)."""
    return args.launcher == "pytorch" and int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0


def gather_rows(ctx: Context, row):
    """All-gather one int row of the same length from every rank (the process group's backend: gloo on CPU,
    nccl/hccl on the device, hence the tensor on this rank's device). Returns the rows in rank order."""
    import torch.distributed as dist
    device = {"cuda": f"cuda:{ctx.local_index}", "npu": f"npu:{ctx.local_index}"}.get(ctx.device, "cpu")
    mine = torch.tensor(list(row), dtype=torch.int64, device=device)
    rows = [torch.empty_like(mine) for _ in range(ctx.world_size)]
    dist.all_gather(rows, mine)
    return [r.cpu().tolist() for r in rows]


def _saved_world(path):
    from common.checkpoint import CheckpointError

    from .checkpoint import safe_load
    from .resume import read_checkpoint_meta
    try:
        return read_checkpoint_meta(path).get("world_size")
    except CheckpointError:  # e.g. torch's legacy (non-zip) format: the full, weights-only read
        meta = safe_load(path).get("meta")
        return meta.get("world_size") if isinstance(meta, dict) else None


def checkpoint_to_resume(args, ctx: Context, log):
    """The checkpoint this rank resumes from, or None to start from scratch; one with another rank count than
    this job's is refused (``common.resume.check_world``, exit 2). Writes nothing (only removes the temps of
    interrupted saves), so it runs before the work dir is opened.

    --resume PATH / --resume-from PATH / the config's resume_from: that file, on every rank. --resume auto (also
    implied in the workers torchrun restarts, see ``restarted_by_torchrun``): one process takes the newest
    readable ``epoch_N.pth``; several ranks agree on a step and each takes its own file of it
    (``mmcls_ext.resume.choose``)."""
    from common.resume import check_world

    from .resume import choose
    explicit = args.resume if args.resume != "auto" else None
    explicit = explicit or args.resume_from or ctx.cfg.get("resume_from")
    if explicit:
        check_world(explicit, _saved_world(explicit), ctx.world_size)
        return explicit
    if args.resume != "auto" and not restarted_by_torchrun(args):
        return None
    if ctx.distributed:
        found = choose(ctx.work_dir, ctx.rank, ctx.world_size, functools.partial(gather_rows, ctx), log)
        found = found.path if found else None
    else:
        found = find_resume(ctx.work_dir, log=log)
        if found is not None:
            check_world(found, _saved_world(found), ctx.world_size)
    if found is None:
        log(f"resume: no checkpoint to resume in {ctx.work_dir}, starting from scratch")
    return found


def register_training_hooks(args, ctx: Context, runner, optim: Optim) -> None:
    """mmcv's lr, optimiser, checkpoint, logger (+ TensorBoard) and momentum hooks, the per-epoch reseeding."""
    from mmcv.runner import DistSamplerSeedHook

    from .hooks import EpochSeedHook
    cfg = ctx.cfg
    log_config = dict(cfg.log_config)
    if args.tensorboard:
        log_config["hooks"] = list(log_config["hooks"]) + [dict(type="TensorboardLoggerHook")]
    checkpoint_config = cfg.checkpoint_config
    if ctx.distributed and ctx.rank > 0:  # each rank its own series (mmcls_ext/resume.py says why)
        from .resume import KEEP, series_template
        keep = int(checkpoint_config.get("max_keep_ckpts", -1))
        checkpoint_config = dict(checkpoint_config, type="RankCheckpointHook", create_symlink=False,
                                 filename_tmpl=series_template(ctx.rank), max_keep_ckpts=max(KEEP, keep))
    runner.register_training_hooks(cfg.lr_config, optim.hook, checkpoint_config, log_config,
                                   cfg.get("momentum_config", None), custom_hooks_config=cfg.get("custom_hooks"))
    runner.register_hook(EpochSeedHook(ctx.seed, ctx.rank if args.diff_seed else 0), priority="VERY_HIGH")
    if ctx.distributed:
        runner.register_hook(DistSamplerSeedHook())
