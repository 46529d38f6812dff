"""The ModelZoo "Final result" banner: one definition for every recipe (DESIGN.md section 6)."""
from __future__ import annotations

import sys

HEADER = "------------------ Final result ------------------"


def format_banner(images_per_sec: float, sec_per_step: float, e2e_seconds: float, accuracy: float) -> str:
    # images/sec is never truncated to an integer (the Ascend scripts' `bc` did that); E2E is whole seconds.
    return "\n".join([
        HEADER,
        f"Final Performance images/sec : {float(images_per_sec):.2f}",
        f"Final Performance sec/step : {float(sec_per_step):.4f}",
        f"E2E Training Duration sec : {int(round(e2e_seconds))}",
        f"Final Train Accuracy : {float(accuracy):.4f}",
    ])


def print_banner(images_per_sec: float, sec_per_step: float, e2e_seconds: float, accuracy: float, stream=None) -> str:
    text = format_banner(images_per_sec, sec_per_step, e2e_seconds, accuracy)
    stream = stream or sys.stdout
    print(text, file=stream, flush=True)
    return text


def parse_banner(text: str) -> dict:
    """Read the banner's four figures back out of a log (used by tests and the demo summary)."""
    keys = {"Final Performance images/sec": "images_per_sec", "Final Performance sec/step": "sec_per_step",
            "E2E Training Duration sec": "e2e_seconds", "Final Train Accuracy": "accuracy"}
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == HEADER]
    if not starts:
        raise ValueError("no 'Final result' banner found")
    out = {}
    for line in lines[starts[-1] + 1: starts[-1] + 5]:
        key, _, value = line.partition(" : ")
        if key.strip() in keys:
            out[keys[key.strip()]] = float(value)
    if len(out) != 4:
        raise ValueError(f"incomplete banner: found {sorted(out)}")
    return out
