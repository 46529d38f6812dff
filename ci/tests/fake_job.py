"""A stand-in 2-rank job for ``kill_trials.py --ranks 2``'s tests: stdlib only, a few seconds per run.

    bash fake_job.sh --out OUT [--epochs 3] [--steps 4] [--resume auto] [--bug diverge|no_agree|orphan]

The launcher starts ranks 0 and 1 (``RANK_ID``) and, as the recipes' launchers, ends non-zero as soon as one
rank fails, stopping the other. Each rank saves its own checkpoint per epoch (``OUT/rank_R/ckpt``) through
``common.checkpoint``, logs ``step``/``checkpoint``/``resume`` events in ``OUT`` and ends with
``OUT/rank_R/final.json``. On ``--resume auto`` the ranks agree on the newest epoch both hold (each publishes its
list in a file of this launch and reads the other's), as the recipes do with ``common.resume.agree``.
Broken on purpose: ``diverge`` (rank 1's resumed updates differ), ``no_agree`` (rank 1 ignores the checkpoints
and starts from scratch), ``orphan`` (the launcher leaves a process of the job behind when a rank dies).
"""
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import fake_trainer  # noqa: E402
from common import events  # noqa: E402
from common.checkpoint import atomic_write_text, remove_stale_temps  # noqa: E402


def launcher(args, argv):
    launch_id = str(time.time_ns())
    ranks = [subprocess.Popen([sys.executable, __file__, *argv, f"--rank={r}", f"--launch={launch_id}"])
             for r in (0, 1)]
    # until every rank is done or one has failed
    while any(p.poll() is None for p in ranks) and not any(p.poll() not in (None, 0) for p in ranks):
        time.sleep(0.05)
    failed = [r for r, p in enumerate(ranks) if p.poll() not in (None, 0)]
    if failed and args.bug == "orphan":
        subprocess.Popen(["sleep", "600"])  # a process of the job nobody stops
    for p in ranks:
        if p.poll() is None:
            p.kill()
    for r, p in enumerate(ranks):
        p.wait()
    if failed:
        print(f"ERROR: rank {failed[0]} exited with {ranks[failed[0]].returncode}", flush=True)
        return 1
    return 0


def held(ckpts):
    """The epochs of this rank's complete checkpoints."""
    epochs = []
    for p in ckpts.glob("epoch_*.json"):
        try:
            if "w" in json.loads(p.read_text()):
                epochs.append(int(p.stem.split("_")[1]))
        except ValueError:
            continue
    return sorted(epochs)


def agree(out, rank, launch, mine):
    """The newest epoch both ranks hold: publish this rank's list for this launch, read the other's."""
    atomic_write_text(out / f".held_{launch}_{rank}.json", json.dumps(mine))
    other = out / f".held_{launch}_{1 - rank}.json"
    while not other.exists():
        time.sleep(0.02)
    return max(set(mine) & set(json.loads(other.read_text())), default=0)


def worker(args):
    out, rank = Path(args.out), args.rank
    os.environ["RANK_ID"] = str(rank)
    ckpts = out / f"rank_{rank}" / "ckpt"
    ckpts.mkdir(parents=True, exist_ok=True)
    weights, step, path = [0.0] * 8, 0, None
    if args.resume == "auto":
        remove_stale_temps(ckpts)
        epoch = agree(out, rank, args.launch, held(ckpts))
        if args.bug == "no_agree" and rank == 1:
            epoch = 0
        if epoch:
            path = ckpts / f"epoch_{epoch:04d}.json"
            state = json.loads(path.read_text())
            weights, step = state["w"], state["step"]
    events.emit(out, "resume", checkpoint=None if path is None else str(path), epoch=step // args.steps,
                global_step=step)
    resumed = step
    for epoch in range(step // args.steps, args.epochs):
        for s in range(1, args.steps + 1):
            drift = 1e-3 if args.bug == "diverge" and rank == 1 and resumed else 0.0
            rng = random.Random(f"{args.seed}-{rank}-{step}")
            weights = [0.9 * w + rng.gauss(0, 1) + drift for w in weights]
            step += 1
            time.sleep(0.05)
            events.emit(out, "step", epoch=epoch + 1, step=s, global_step=step, loss=sum(weights))
        saved = fake_trainer.slow_save(ckpts / f"epoch_{epoch + 1:04d}.json", {"w": weights, "step": step}, 0.2)
        events.emit(out, "checkpoint", path=str(saved), epoch=epoch + 1, global_step=step)
    atomic_write_text(out / f"rank_{rank}" / "final.json", json.dumps({"w": weights}))
    return 0


def main():
    ap = fake_trainer.parser()
    ap.add_argument("--rank", type=int, default=None)
    ap.add_argument("--launch", default="")
    args, _ = ap.parse_known_args()
    if args.rank is None:
        return launcher(args, sys.argv[1:])
    return worker(args)


if __name__ == "__main__":
    sys.exit(main())
