"""The session's run of test/train_performance_1p.sh on tiny noise data (conftest ``trained``), then test.py
and export.py on its checkpoint."""
import json
import re
import struct

import pytest

from common import cputune, events
from common.banner import parse_banner
from conftest import python

CASE = "CSPNet_ID0840_for_TensorFlow_bs16_1p_perf"


def test_cpu_tuning_line_and_record(trained):
    out, stdout = trained
    cputune.assert_reported(stdout, json.loads((out / f"{CASE}.json").read_text()), ["tf_onednn", "conv_impl", "bn_impl"])


def test_banner_and_run_records(trained):
    out, stdout = trained
    banner = parse_banner(stdout)
    record = json.loads((out / f"{CASE}.json").read_text())
    assert record["params"] == 26_609_770 and record["batch_size"] == 16 and record["epochs"] == 2
    assert record["warmup_steps"] == 3 and record["steady_steps"] == 3 and record["seed"] == 3
    assert banner["images_per_sec"] == pytest.approx(record["images_per_sec"], rel=1e-2) and banner["images_per_sec"] > 0
    assert banner["accuracy"] == pytest.approx(record["accuracy"], abs=1e-4)
    # the original's figures: StepTime over the steps after epoch 0, FPS = batch / StepTime
    step_time = float(re.search(r"^StepTime = (\S+)", stdout, re.M).group(1))
    fps = float(re.search(r"^FPS = (\S+)", stdout, re.M).group(1))
    assert fps == pytest.approx(16 / step_time) and step_time == pytest.approx(banner["sec_per_step"], rel=1e-3)
    # the banner's accuracy is the last "Validation accuracy" line, as the original script parsed it
    assert float(re.findall(r"^Validation accuracy: (\S+)", stdout, re.M)[-1]) == pytest.approx(banner["accuracy"])
    log = dict(line.split(" = ", 1) for line in (out / f"{CASE}.log").read_text().splitlines())
    assert log["CaseName"] == CASE and log["Network"] == "CSPNet_ID0840_for_TensorFlow" and log["RankSize"] == "1"
    assert (out / "train_0.log").read_text().count("Loss:") == 6


def test_events_record_the_start_every_logged_step_and_each_checkpoint(trained):
    out, _ = trained
    kinds = [e["event"] for e in events.read(out)]
    assert kinds[:2] == ["resume", "initial_weights"] and kinds[-2:] == ["cpu_tuning", "finished"]
    start = events.last(out, "resume")
    assert (start["checkpoint"], start["epoch"], start["global_step"]) == (None, 0, 0)
    assert len(events.last(out, "initial_weights")["digest"]) == 16
    steps = events.read(out, "step")  # --DISPLAY_STEP=1: one per step, epochs and steps counted from 1
    assert [(e["epoch"], e["step"], e["global_step"]) for e in steps] == [
        (1, 1, 1), (1, 2, 2), (1, 3, 3), (2, 1, 4), (2, 2, 5), (2, 3, 6)]
    saved = events.read(out, "checkpoint")
    assert [(e["epoch"], e["global_step"]) for e in saved] == [(1, 3), (2, 6)]
    assert saved[-1]["path"] == str((out / "ckpt" / "step_000000006" / "cspdarknet53.ckpt").resolve())


def test_checkpoint_summary_and_curves_written(trained):
    out, _ = trained
    assert (out / "cspdarknet53.ckpt.index").is_file() and (out / "cspdarknet53.ckpt.meta").is_file()
    rows = (out / "summary.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,train_loss,eval_top1") and len(rows) == 3
    png = (out / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width >= 400 and height >= 200


def test_eval_from_checkpoint_reproduces_training_accuracy(trained, noise):
    out, stdout = trained
    _, ev, _ = python("test.py", f"--CKPT_PATH={out / 'cspdarknet53.ckpt'}", f"--CIFAR_PATH={noise}", "--batch_size=16")
    assert "---- Final accuracy ----" in ev
    top1 = float(re.search(r"^Top-1: (\S+)", ev, re.M).group(1))
    assert top1 == pytest.approx(parse_banner(stdout)["accuracy"], abs=1e-4)


def test_export_pb_and_onnx_match_the_session(trained, noise, tmp_path):
    out, _ = trained
    _, ex, _ = python("export.py", f"--CKPT_PATH={out}", f"--output_dir={tmp_path}", f"--CIFAR_PATH={noise}",
                      "--batch_size=16")
    assert (tmp_path / "cspdarknet53.pb").stat().st_size > 100e6 and (tmp_path / "cspdarknet53.onnx").is_file()
    diffs = [float(d) for d in re.findall(r"max \|diff\| vs session (\S+)", ex)]
    assert len(diffs) == 2 and max(diffs) < 1e-3, ex
    assert "output stage6/Add_1" in ex
