"""The pieces every recipe shares: the error-exit convention, run events, the weight digest, the warm-up rule,
the test helpers."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from common import cli, events
from common.digest import file_digest, weights_digest
from common.rank_table import load_rank_table
from common.testing import free_port, write_rank_table
from common.throughput import ThroughputMeter, warmup_steps


def _script(tmp_path, body):
    path = tmp_path / "entry.py"
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path.write_text(f"import sys\nsys.path.insert(0, {root!r})\nfrom common import cli\n{body}\n")
    return path


@pytest.mark.parametrize("body, code, err", [
    ("def main():\n    raise cli.RecipeError('data/x.bin: not a CIFAR batch\\n(truncated)')\ncli.run(main)",
     2, "ERROR: data/x.bin: not a CIFAR batch (truncated)\n"),
    ("def main():\n    raise KeyError('boom')\ncli.run(main, errors=(KeyError,))", 2, "ERROR: 'boom'\n"),
    ("def main():\n    raise OSError('lost rank 1')\n"
     "cli.run(main, translate=lambda e: 'a rank died' if isinstance(e, OSError) else None)", 2, "ERROR: a rank died\n"),
    ("def main():\n    return 0\ncli.run(main)", 0, ""),
])
def test_entry_points_fail_with_one_line_and_exit_2(tmp_path, body, code, err):
    proc = subprocess.run([sys.executable, _script(tmp_path, body)], capture_output=True, text=True)
    assert proc.returncode == code and proc.stderr == err


def test_an_unknown_exception_keeps_its_traceback(tmp_path):
    proc = subprocess.run([sys.executable, _script(tmp_path, "def main():\n    1 / 0\ncli.run(main)")],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "ZeroDivisionError" in proc.stderr


@pytest.mark.parametrize("fn, good, bad", [(cli.positive_int, [("3", 3)], ["0", "-1", "x"]),
                                            (cli.non_negative_int, [("0", 0)], ["-1", "1.5"]),
                                            (cli.str2bool, [("True", True), ("0", False), ("off", False)], ["maybe"])])
def test_argument_types(fn, good, bad):
    import argparse
    for text, value in good:
        assert fn(text) == value
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError):
            fn(text)


@pytest.mark.parametrize("argv, want", [([], False), (["--rank_checkpoints"], True), (["--rank-checkpoints"], True),
                                        (["--rank_checkpoints=true"], True), (["--rank_checkpoints=false"], False),
                                        (["--rank_checkpoints", "False"], False), (["--save_rank_weights"], True)])
def test_rank_checkpoints_is_one_flag_with_the_former_name_kept(argv, want):
    import argparse
    parser = argparse.ArgumentParser()
    cli.add_rank_checkpoints(parser, "every rank saves", "--save_rank_weights")
    parser.add_argument("--lr", type=float, default=0.1)
    args = parser.parse_args([*argv, "--lr=0.2"])  # a flag after the bare switch is not taken as its value
    assert args.rank_checkpoints is want and args.lr == 0.2


def test_rank_checkpoints_refuses_a_value_that_is_not_a_boolean(capsys):
    import argparse
    parser = argparse.ArgumentParser()
    cli.add_rank_checkpoints(parser, "every rank saves")
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["--rank_checkpoints=sometimes"])
    assert exc.value.code == 2 and "--rank_checkpoints" in capsys.readouterr().err


def test_train_steps_caps_the_steps_of_each_epoch():
    assert cli.steps_per_epoch(100, None) == 100 and cli.steps_per_epoch(100, 7) == 7
    assert cli.steps_per_epoch(5, 7) == 5


def test_events_round_trip_and_survive_a_cut_line(tmp_path):
    events.emit(tmp_path, "resume", checkpoint=None, epoch=0, global_step=0)
    events.emit(tmp_path, "checkpoint", path="ckpt/step_3", epoch=1, global_step=np.int64(3), rank=1)
    with open(tmp_path / events.FILE, "a") as fh:
        fh.write('{"event": "step", "glo')  # a writer killed mid-line
    found = events.read(tmp_path)
    assert [e["event"] for e in found] == ["resume", "checkpoint"]
    assert found[1]["global_step"] == 3 and found[1]["rank"] == 1 and found[0]["pid"] == os.getpid()
    assert events.last(tmp_path, "checkpoint")["path"] == "ckpt/step_3"
    assert events.read(tmp_path / "missing") == [] and events.last(tmp_path, "step") is None
    with pytest.raises(ValueError):
        events.emit(tmp_path, "resumed")


def test_weights_digest_is_order_and_value_sensitive_not_dtype_sensitive(tmp_path):
    a, b = np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(4, np.float32)
    d = weights_digest([a, b])
    assert len(d) == 16 and d == weights_digest([a.astype(np.float64), b])
    assert d != weights_digest([b, a]) and d != weights_digest([a, b * 2])
    (tmp_path / "f").write_bytes(b"abc")
    assert file_digest(tmp_path / "f") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_one_warmup_rule():
    assert warmup_steps(30, 3) == 30                         # several epochs: the first one
    assert warmup_steps(30, 1) == 5 and warmup_steps(12, 1) == 2 and warmup_steps(3, 1) == 1
    assert warmup_steps(20, 1, group=3) == 6                 # whole sink groups
    meter = ThroughputMeter(4, warmup_steps=warmup_steps(10, 1))
    for _ in range(10):
        meter.record(0.5)
    assert meter.warmup_steps_done == 2 and meter.steady_steps == 8
    with pytest.raises(ValueError):
        warmup_steps(0, 1)


def test_free_port_gives_consecutive_free_ports():
    port = free_port(consecutive=3)
    for k in range(3):
        with socket.socket() as s:
            s.bind(("127.0.0.1", port + k))


def test_written_rank_tables_parse(tmp_path):
    t = load_rank_table(write_rank_table(tmp_path / "t.json", 2, servers=("127.0.0.1", "127.0.0.2")))
    assert t.rank_size == 4 and t.server_count == 2
    bad = write_rank_table(tmp_path / "dup.json", 2, rank_ids=[0, 0])
    with pytest.raises(Exception, match="dup.json"):
        load_rank_table(bad)
