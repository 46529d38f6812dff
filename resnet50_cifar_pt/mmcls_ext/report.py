"""What tools/train.py's summarize() adds to the run record: the ranks' agreement and the 8p perf report."""
from __future__ import annotations

from common.checkpoint import atomic_write_text

from .parallel import param_digest


def rank_consistency(model, train_loader, logger) -> dict:
    """Digest of every rank's parameters and how many samples two ranks shared in the last epoch.

    Data parallelism is only right if the first are all equal and the second is zero; both go into
    the run record, and a mismatch is logged as an error. Every rank must call it (an all-gather).
    """
    import torch.distributed as dist
    mine = dict(digest=param_digest(model), indices=list(iter(train_loader.sampler)))
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
        logger.info(f"ranks in step: identical parameters on all {len(digests)} ranks, "
                    "no sample shared in the last epoch")
    return dict(rank_param_digests=digests, rank_shared_samples=shared,
                rank_samples_last_epoch=[len(e["indices"]) for e in everyone])


def write_perf_report(path, record, throughput, summary, train_images: int) -> None:
    """The original train_full_8p*.sh report, from measured times instead of scraped log text."""
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
