"""The session's run of test/train_performance_1p.sh on tiny noise data (conftest ``trained``), then test.py
and export.py on its checkpoint (the exported files run in TensorFlow and onnxruntime on digits images)."""
import json
import re
import struct

import numpy as np
import pytest
import tensorflow as tf

import utils
import train
from common import contract, cputune, events
from common.banner import parse_banner
from conftest import RECIPE, python, run
from models import cspdarknet53

tf1 = tf.compat.v1

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


def test_case_log_and_loss_file_as_the_original_writes_them(trained):
    """common.contract.check_run (the same checks in all five recipes) against this recipe's spec: keys in the
    original's order, TrainingTime in seconds per step, DeviceType = uname -m, ${CaseName}_loss.txt. Then the
    original script's own parse: the loss file is field 7 of every "Loss:" line, ActualLoss its last."""
    out, stdout = trained
    got = contract.check_run(out, stdout, train.CASE_LOG, network=train.NETWORK, case=CASE, rank_size=1,
                             batch_size=16)
    logged = [float(line.split()[6]) for line in stdout.splitlines() if " Loss: " in line]
    assert len(logged) == 6 and got["losses"] == pytest.approx(logged, abs=1e-6)  # 2 epochs x 3 steps


def test_the_performance_script_refuses_an_unknown_flag(noise, tmp_path):
    rc, stdout, stderr = run(["bash", RECIPE / "test" / "train_performance_1p.sh", f"--data_path={noise}",
                              f"--output_path={tmp_path / 'out'}", "--no_such_flag=1"], check=False)
    contract.check_refused(rc, stdout + stderr, "--no_such_flag", tmp_path / "out")


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


def test_a_checkpoint_with_the_originals_variables_evaluates_through_test_py(noise, tmp_path):
    """A checkpoint holding exactly what the original's tf.train.Saver writes (its 146 weights and biases by the
    original's names and shapes, their Momentum slots, no state.json of ours) restores in test.py, the recipe's
    eval entry, and its top-1 is the one of the logits that checkpoint gives in the recipe's network."""
    from test_model import original_variable_names
    rng = np.random.RandomState(0)
    graph = tf.Graph()
    with graph.as_default():
        made = [tf1.Variable(rng.normal(0, 0.01 if len(shape) > 1 else 0.1, shape).astype(np.float32), name=name)
                for name, shape in original_variable_names().items()]
        made += [tf1.Variable(np.zeros(v.shape, np.float32), name=v.op.name + "/Momentum") for v in list(made)]
        with tf1.Session(graph=graph) as sess:
            sess.run(tf1.global_variables_initializer())
            prefix = tf1.train.Saver(made).save(sess, str(tmp_path / "original" / "cspdarknet53.ckpt"))
    _, ev, _ = python("test.py", f"--CKPT_PATH={prefix}", f"--CIFAR_PATH={noise}", "--batch_size=16",
                      "--conv_impl=conv2d", "--bn_impl=moments")
    top1 = float(re.search(r"^Top-1: (\S+)", ev, re.M).group(1))
    _, _, x_te, y_te = utils.load_cifar(str(noise))
    hits = [np.argmax(_recipe_logits(prefix, x_te[idx].astype(np.float32), "conv2d", "moments"), 1)
            == np.argmax(y_te[idx], 1) for idx in utils.eval_batches(len(x_te), 16)]  # test.py's batches
    assert top1 == pytest.approx(float(np.mean([h.mean() for h in hits])), abs=1e-4)


def _recipe_logits(prefix, images, conv_impl, bn_impl):
    """Logits of the Saver checkpoint ``prefix`` restored into the recipe's own network builder (fresh graph)."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf1.placeholder(tf.float32, [None, 32, 32, 3])
        logits = cspdarknet53.classifier(x, conv_impl=conv_impl, bn_impl=bn_impl)
        with tf1.Session(graph=graph, config=utils.session_config("cpu")) as sess:
            tf1.train.Saver().restore(sess, str(prefix))
            return sess.run(logits, {x: images})


def _frozen_pb_logits(path, images):
    """The exported GraphDef alone, imported into a fresh graph and session: nothing of the checkpoint."""
    graph_def = tf1.GraphDef()
    graph_def.ParseFromString(path.read_bytes())
    graph = tf.Graph()
    with graph.as_default():
        tf1.import_graph_def(graph_def, name="")
        assert not [op for op in graph.get_operations() if op.type.startswith("Variable")]
        with tf1.Session(graph=graph, config=utils.session_config("cpu")) as sess:
            return sess.run(f"{cspdarknet53.LOGITS_NODE}:0", {"Placeholder:0": images})


def _onnx_logits(path, images):
    import onnxruntime as ort
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: images})[0]


def _rel(got, want):
    return float(np.linalg.norm(got.astype(np.float64) - want) / np.linalg.norm(want.astype(np.float64)))


def test_export_pb_and_onnx_match_the_session(trained, noise, digits, tmp_path):
    out, _ = trained
    _, ex, _ = python("export.py", f"--CKPT_PATH={out}", f"--output_dir={tmp_path}", f"--CIFAR_PATH={noise}",
                      "--batch_size=16")
    assert (tmp_path / "cspdarknet53.pb").stat().st_size > 100e6 and (tmp_path / "cspdarknet53.onnx").is_file()
    diffs = [float(d) for d in re.findall(r"max \|diff\| vs session (\S+)", ex)]
    assert len(diffs) == 2 and max(diffs) < 1e-3, ex
    assert "output stage6/Add_1" in ex
    # the exporter's own check above is a number it prints about itself; below, the files it wrote are run in
    # their own runtimes on real digits (a whole batch: the network normalises over the batch it is given, and
    # not the exporter's check batch) and compared with the run's last checkpoint restored here
    images = utils.load_cifar(digits)[2][16:32].astype(np.float32)
    prefix = events.last(out, "checkpoint")["path"]
    # the formulations the training run chose (auto: probed on this host), i.e. the graph that was trained, and
    # the original's conv2d + moments graph, the one export.py freezes
    choices = json.loads((out / f"{CASE}.json").read_text())["cpu_tuning"]["choices"]
    trained_graph = _recipe_logits(prefix, images, choices["conv_impl"]["choice"], choices["bn_impl"]["choice"])
    original_graph = _recipe_logits(prefix, images, "conv2d", "moments")
    pb = _frozen_pb_logits(tmp_path / "cspdarknet53.pb", images)
    onnx = _onnx_logits(tmp_path / "cspdarknet53.onnx", images)
    assert pb.shape == onnx.shape == (16, 10)
    # real inputs give each image its own logits, so an export with a constant output cannot match them
    assert np.std(original_graph, axis=0).min() > 1e-2
    # tolerances as relative L2 errors over the batch's logits; measured on this host (AMD EPYC, AVX2):
    # - the frozen graph computes the same ops with constants for variables: 6.5e-7 (float32 rounding of
    #   grappler's constant folding), bound 1e-5;
    # - onnxruntime's kernels, and the trained formulation (matmul convolutions, fused normalisation kernel),
    #   sum in other orders, which 72 batch-axis normalisations amplify (test_model: ~4e-4 at initialisation):
    #   1.2e-4 (trained graph vs original), 2.1e-4 (ONNX), bound 2e-3.
    # Weights that are not the checkpoint's (an untrained or re-initialised export) give errors of order 1.
    errors = {"pb vs original": _rel(pb, original_graph), "onnx vs original": _rel(onnx, original_graph),
              "pb vs trained": _rel(pb, trained_graph), "onnx vs trained": _rel(onnx, trained_graph)}
    assert errors["pb vs original"] < 1e-5, errors
    assert errors["onnx vs original"] < 2e-3 and errors["pb vs trained"] < 2e-3, errors
    assert errors["onnx vs trained"] < 2e-3, errors
