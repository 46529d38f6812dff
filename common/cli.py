"""The one error-exit convention of every entry point (train, eval/test, export, tools).

An expected failure (bad input, a damaged file, a lost rank) is raised as an exception anywhere below the
entry point; only the entry point turns it into one ``ERROR: <message>`` line on stderr and exit status 2.
Library code never calls ``sys.exit``. ``-h`` is argparse's: usage on stdout, exit 0. Argument errors are
argparse's too: usage + message, exit 2.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Iterable, Optional

EXIT_ERROR = 2


class RecipeError(Exception):
    """An expected failure with a message a user can act on (names the file and the problem)."""


def _say(line: str) -> None:
    """One write of the line and its newline: under ``python -u`` print() makes two, and the ranks of a job
    that all fail at once share one pipe, where two-write lines interleave ("...folderERROR: ...")."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def error_line(exc: BaseException) -> str:
    return "ERROR: " + (" ".join(str(exc).split()) or type(exc).__name__)


def guard(main: Callable[..., Optional[int]], *args, errors: Iterable[type] = (),
          translate: Optional[Callable[[BaseException], Optional[str]]] = None) -> int:
    """``main(*args)``'s exit status; ``RecipeError`` or one of ``errors`` becomes one line and ``EXIT_ERROR``.

    ``translate(exc)`` may turn any other exception (a framework's wrapped error, a lost connection) into
    the message to print; returning None lets the exception propagate with its traceback (a bug).
    """
    expected = (RecipeError, *tuple(errors))
    try:
        return int(main(*args) or 0)
    except expected as exc:
        _say(error_line(exc))
        return EXIT_ERROR
    except Exception as exc:  # noqa: BLE001 - handed to translate, re-raised when it is not known
        message = translate(exc) if translate else None
        if message is None:
            raise
        _say(f"ERROR: {message}")
        return EXIT_ERROR


def run(main: Callable[..., Optional[int]], *args, errors: Iterable[type] = (),
        translate: Optional[Callable[[BaseException], Optional[str]]] = None):
    """The ``if __name__ == "__main__"`` line: ``sys.exit(guard(...))``, the only exit of a process."""
    sys.exit(guard(main, *args, errors=errors, translate=translate))


# -- argument types shared by every recipe's parser ---------------------------------------------------------
def str2bool(value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {value!r}")


def positive_int(value) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return n


def non_negative_int(value) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value!r}")
    return n


# -- the flags that mean the same in all five recipes -------------------------------------------------------
TRAIN_STEPS_HELP = ("train at most this many steps per epoch (the Ascend scripts' --train_steps; "
                    "unset: the whole training set every epoch)")


def add_rank_checkpoints(parser, help: str, *former: str) -> None:
    """``--rank_checkpoints`` (also ``--rank-checkpoints``): the one name, in every recipe where ranks other than 0
    save nothing by default, of "every rank also writes its own copy" (to compare the replicas file against file,
    or for servers without a shared folder). A bare switch, or ``=true``/``=false`` as the MindSpore scripts write
    booleans. ``former``: the name the recipe used before, still accepted so that old command lines keep working.
    (A bare switch right before a positional argument would take it as its value: put it after, or write =true.)"""
    parser.add_argument("--rank_checkpoints", "--rank-checkpoints", *former, dest="rank_checkpoints", nargs="?",
                        const=True, default=False, type=str2bool, metavar="BOOL", help=help)


def steps_per_epoch(dataset_steps: int, train_steps: Optional[int]) -> int:
    """Steps of one epoch: the data's, capped by ``--train_steps`` when given (the one meaning of the flag)."""
    if train_steps is None or train_steps <= 0:
        return dataset_steps
    return min(dataset_steps, train_steps)
