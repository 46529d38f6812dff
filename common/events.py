"""Run events: what a run did that tools need to know, as JSON lines in ``<output dir>/events.jsonl``.

Tools (``ci/kill_trials.py``, the tests) read these instead of matching log wording. One line per event,
appended with a single ``write`` on an ``O_APPEND`` descriptor, so ranks and restarts of the same run share
the file and a line is never interleaved; a line cut by a kill is skipped by :func:`read`.

Kinds and their fields (every event also has ``event``, ``time``, ``rank``, ``pid``):

- ``resume``: ``checkpoint`` (path, or None for a fresh start), ``epoch`` (epochs done), ``global_step``;
  written by every rank of a multi-rank job. Some recipes add ``from_rank`` (the rank whose state this rank
  took instead of reading a file: cspnet's broadcast) and ``state_digest`` (a digest of all variables after the
  restore, equal on every rank).
- ``step``: ``epoch`` (from 1), ``step`` (in the epoch, from 1), ``global_step``, ``loss``; at log cadence.
- ``checkpoint``: ``path``, ``epoch`` (epochs done), ``global_step``; after the file is complete on disk.
- ``initial_weights``: ``digest`` (:func:`common.digest.weights_digest` of the model before step 1).
- ``cpu_tuning``: the record of :func:`common.cputune.as_record` (written by ``runrecord.finish_run``).
- ``finished``: ``case``, ``global_step``, ``images_per_sec``, ``accuracy`` (written by ``runrecord.finish_run``).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import List, Optional, Union

FILE = "events.jsonl"
KINDS = ("resume", "step", "checkpoint", "initial_weights", "cpu_tuning", "finished")


def _rank() -> int:
    for key in ("RANK_ID", "RANK", "MZ_RANK"):
        try:
            return int(os.environ[key])
        except (KeyError, ValueError):
            continue
    return 0


def emit(output_dir: Union[str, os.PathLike], kind: str, rank: Optional[int] = None, **fields) -> dict:
    """Append one event to ``<output_dir>/events.jsonl`` and return it."""
    if kind not in KINDS:
        raise ValueError(f"unknown event kind {kind!r} (known: {', '.join(KINDS)})")
    event = {"event": kind, "time": round(time.time(), 3), "rank": _rank() if rank is None else int(rank),
             "pid": os.getpid(), **fields}
    line = (json.dumps(event, sort_keys=True, default=_jsonable) + "\n").encode()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return event


def read(path: Union[str, os.PathLike], kind: Optional[str] = None) -> List[dict]:
    """The events in ``path`` (a file, or a folder holding ``events.jsonl``), oldest first; cut lines skipped."""
    p = Path(path)
    if p.is_dir():
        p = p / FILE
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    found = []
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue  # the last line of a killed writer
        if isinstance(event, dict) and (kind is None or event.get("event") == kind):
            found.append(event)
    return found


def last(path, kind: str) -> Optional[dict]:
    found = read(path, kind)
    return found[-1] if found else None


def _jsonable(o):
    try:
        return o.item()  # numpy / framework scalars
    except AttributeError:
        return str(o)
