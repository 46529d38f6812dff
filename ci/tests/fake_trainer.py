"""A stand-in training run for the kill-trial tool's tests: stdlib only, about a second per run.

    python fake_trainer.py --out OUT [--epochs 3] [--steps 4] [--resume auto] [--bug diverge|delete_first]

Like the recipes it logs ``epoch E step S [..]`` per step and writes the ``resume``, ``step`` and ``checkpoint``
events (``common.events``), saves one checkpoint per epoch through ``common.checkpoint`` (slowly, so a kill can land inside the save), resumes with ``--resume auto`` and ends
with ``final.json``. Each step's update is keyed by (seed, step), so a resumed run is exact. The ``--bug``
modes break that on purpose: ``diverge`` draws from one unkeyed stream (a resumed run differs),
``delete_first`` removes the old checkpoints before writing the new one (a kill mid-save loses them all).
"""
import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from common import events  # noqa: E402
from common.checkpoint import atomic_write, atomic_write_text, latest_valid, remove_stale_temps  # noqa: E402


def slow_save(path, state, pause=0.3):
    """``state`` as JSON through common.checkpoint.atomic_write: half, a pause, the rest (a save that takes a
    while, like a real one, so that a kill can land inside it)."""
    body = json.dumps(state).encode()

    def write(tmp):
        with open(tmp, "wb") as fh:
            fh.write(body[: len(body) // 2])
            fh.flush()
            time.sleep(pause)
            fh.write(body[len(body) // 2:])
    return atomic_write(path, write)


def parser():
    """The stand-ins' shared flags (fake_job.py adds its own)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--resume", default="")
    ap.add_argument("--bug", default="")
    return ap


def main():
    args = parser().parse_args()
    out = Path(args.out)
    ckpts = out / "ckpt"
    ckpts.mkdir(parents=True, exist_ok=True)
    weights, step, best = [0.0] * 8, 0, None
    if args.resume == "auto":
        remove_stale_temps(ckpts)
        best = latest_valid(ckpts.glob("epoch_*.json"), lambda p: "w" in json.loads(p.read_text()),
                            key=lambda p: int(p.stem.split("_")[1]))  # the epoch in the name, as the recipes
        if best is None:
            print(f"resume: no valid checkpoint in {ckpts}, starting from scratch")
        else:
            state = json.loads(best.read_text())
            weights, step = state["w"], state["step"]
            print(f"resume: continuing from {best} at epoch {step // args.steps}")
    events.emit(out, "resume", checkpoint=None if best is None else str(best), epoch=step // args.steps,
                global_step=step)
    stream = random.Random(args.seed)
    for epoch in range(step // args.steps, args.epochs):
        for s in range(1, args.steps + 1):
            rng = stream if args.bug == "diverge" else random.Random(f"{args.seed}-{step}")
            weights = [0.9 * w + rng.gauss(0, 1) for w in weights]
            step += 1
            time.sleep(0.05)
            print(f"epoch {epoch + 1} step {s} [{step}/{args.epochs * args.steps}] loss {sum(weights):.6f}", flush=True)
            events.emit(out, "step", epoch=epoch + 1, step=s, global_step=step, loss=sum(weights))
        if args.bug == "delete_first":
            for old in ckpts.glob("epoch_*.json"):
                old.unlink()
        path = slow_save(ckpts / f"epoch_{epoch + 1:04d}.json", {"w": weights, "step": step})
        events.emit(out, "checkpoint", path=str(path), epoch=epoch + 1, global_step=step)
    atomic_write_text(out / "final.json", json.dumps({"w": weights}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
