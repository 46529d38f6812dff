"""One short run through test/train_performance_1p.sh, then eval and export from what it saved."""
import json
import struct
from pathlib import Path

import numpy as np
import pytest

import train
from common import cli, contract, cputune, events
from common.digest import weights_digest
from common.banner import parse_banner
from common.runrecord import KEYS_ACCURACY_FIRST
from src import checkpointing
from src.model import TRAINABLE_PARAMS
from conftest import RECIPE, run

CASE = "cutmix_ID2502_for_TensorFlow2.X_bs8_1p_dynamic_eval_perf"
EXPORT_ATOL = 1e-5  # exported model vs Keras, softmax outputs (test_export_h5_savedmodel_onnx_match_keras)


def _png_size(path):
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def test_cpu_tuning_line_and_record(e2e):
    stdout, out = e2e
    cputune.assert_reported(stdout, json.loads((out / f"{CASE}.json").read_text()), ["tf_onednn"])


def test_banner_record_and_log(e2e):
    stdout, out = e2e
    banner = parse_banner(stdout)
    record = json.loads((out / f"{CASE}.json").read_text())
    assert record["network"] == "cutmix_ID2502_for_TensorFlow2.X" and record["case_name"] == CASE
    assert record["params"] == TRAINABLE_PARAMS and record["device"] == "cpu"
    assert record["steps"] == 16 and record["steady_steps"] == 8  # epoch 1 is warm-up
    assert record["images_per_sec"] > 0 and banner["images_per_sec"] == pytest.approx(record["images_per_sec"], abs=0.01)
    assert banner["accuracy"] == pytest.approx(record["accuracy"], abs=1e-4)
    assert 0.0 <= record["accuracy"] <= 1.0 and np.isfinite(record["loss"])
    case_log = dict(l.split(" = ", 1) for l in (out / f"{CASE}.log").read_text().splitlines())
    assert list(case_log) == list(KEYS_ACCURACY_FIRST) and case_log["CaseName"] == CASE
    log = (out / "train_0.log").read_text()
    assert "TimeHistory:" in log and "val_accuracy" in log and "Final result" in log


def test_case_log_loss_file_and_duration_line_as_the_original_writes_them(e2e):
    """common.contract.check_run (the same checks in all five recipes) against this recipe's spec: keys in the
    original's order, TrainingTime = BatchSize x RankSize x 1000 / FPS in ms, "Final Training Duration sec"
    right before the banner. Then the original script's own parse: the loss file is field 6 (the training
    loss) of every line with "val_loss" in train_0.log, one per epoch."""
    stdout, out = e2e
    got = contract.check_run(out, stdout, train.CASE_LOG, network=train.NETWORK, case=CASE, rank_size=1,
                             batch_size=8)
    epoch_lines = [line.split() for line in (out / "train_0.log").read_text().splitlines() if "val_loss" in line]
    assert len(got["losses"]) == len(epoch_lines) == 2
    assert got["losses"] == pytest.approx([float(f[5]) for f in epoch_lines], abs=1e-4)


def test_the_performance_script_refuses_an_unknown_flag(noise, tmp_path):
    proc = run(["bash", RECIPE / "test" / "train_performance_1p.sh", f"--data_path={noise}",
                f"--output_path={tmp_path / 'out'}", "--no_such_flag=1"])
    contract.check_refused(proc.returncode, proc.stdout + proc.stderr, "--no_such_flag", tmp_path / "out")


def test_events_record_resume_initial_weights_steps_and_checkpoints(e2e):
    """events.jsonl: what ci/kill_trials.py and the other tests read instead of log lines."""
    _, out = e2e
    found = events.read(out)
    kinds = [e["event"] for e in found]
    assert kinds[:2] == ["resume", "initial_weights"] and kinds[-2:] == ["cpu_tuning", "finished"]
    resume = found[0]
    assert resume["checkpoint"] is None and resume["epoch"] == 0 and resume["global_step"] == 0
    steps = events.read(out, "step")  # --log_steps=1: one per step, as the progress lines
    assert [(e["epoch"], e["step"], e["global_step"]) for e in steps] == \
        [(1 + g // 8, 1 + g % 8, g + 1) for g in range(16)]
    ckpts = events.read(out, "checkpoint")
    assert [(e["epoch"], e["global_step"]) for e in ckpts] == [(1, 8), (2, 16)]
    assert found[-1]["global_step"] == 16
    assert [Path(e["path"]).resolve() for e in ckpts] == [(out / "checkpoints" / f"epoch_000{i}").resolve()
                                                          for i in (1, 2)]
    # the initial weights' digest is that of the saved initial_weights.h5 (trainable weights, model order)
    import tf_keras as keras

    from src.model import resnet_v1
    model = resnet_v1()
    model.load_weights(str(out / "initial_weights.h5"))
    assert found[1]["digest"] == weights_digest(w.numpy() for w in model.trainable_weights)


def test_summary_curves_and_samples(e2e):
    _, out = e2e
    rows = (out / "summary.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,train_loss,eval_top1") and len(rows) == 3
    assert _png_size(out / "curves.png") == (1000, 400)
    w, h = _png_size(out / "cutmix_samples.png")
    assert w > 300 and h > 300


def test_checkpoints_model_and_saved_model_are_written(e2e):
    _, out = e2e
    ckpts = sorted((out / "checkpoints").glob("epoch_*"))
    assert [c.name for c in ckpts] == ["epoch_0001", "epoch_0002"]
    assert checkpointing.verify(ckpts[-1])["epoch"] == 2
    assert (out / "model.h5").is_file() and (out / "saved_model" / "saved_model.pb").is_file()
    assert (out / "initial_weights.h5").is_file()


def test_eval_reproduces_the_accuracy_printed_at_the_end_of_training(e2e, runs, tmp_path):
    import eval as evaluate
    stdout, out = e2e
    printed = parse_banner(stdout)["accuracy"]
    for source in (out, out / "checkpoints" / "epoch_0002"):
        result = tmp_path / "eval.json"
        assert evaluate.main([f"--data_dir={runs['noise']}", f"--checkpoint={source}", "--device=cpu",
                              f"--json={result}"]) == 0
        assert json.loads(result.read_text())["accuracy"] == pytest.approx(printed, abs=5e-5)


def _saved_model_in_a_graph_session(path, x):
    """The SavedModel run by TensorFlow's loader in a fresh tf.Graph and Session (no Keras): its serving
    signature fed ``x``."""
    import tensorflow as tf
    with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], str(path))
        sig = meta.signature_def["serving_default"]
        [inp], [outp] = sig.inputs.values(), sig.outputs.values()
        return sess.run(outp.name, {inp.name: x})


def test_export_h5_savedmodel_onnx_match_keras(e2e, digits, tmp_path):
    """export.py from the last checkpoint; each exported file run in its own runtime (ONNX in onnxruntime, the
    SavedModel in a TF1-style graph session, the HDF5 file through Keras' loader) on 64 real digits test images
    must give the softmax outputs of the Keras model restored here from the same checkpoint.

    Tolerance EXPORT_ATOL = 1e-5  # exported model vs Keras, softmax outputs (test_export_h5_savedmodel_onnx_match_keras) on the probabilities (export.py's own default): the runtimes compute the same
    float32 graph with other kernels and summation orders (onnxruntime's convolutions, a Grappler-rewritten
    graph); measured here: ONNX 1.4e-6, SavedModel 4.8e-7, HDF5 0, while the outputs span 0.34 across images.
    An untrained or constant export differs by far more (checked against the untrained network below)."""
    import onnxruntime as ort
    import tf_keras as keras

    import export
    from src.data import load_arrays
    from src.model import compile_model, resnet_v1
    _, out = e2e
    source = out / "checkpoints" / "epoch_0002"
    assert export.main([f"--checkpoint={source}", f"--output_dir={tmp_path}", f"--data_dir={digits}"]) == 0
    x = load_arrays(digits)[2][:64].astype(np.float32) / 255.0  # the recipe's preprocessing: [0, 1]
    reference = compile_model(resnet_v1())
    checkpointing.restore(source, reference)
    want = reference.predict(x, verbose=0)
    # the check has power: the trained weights give outputs that differ from image to image and from the
    # untrained network's, so a constant or untrained export cannot pass
    assert np.max(np.ptp(want, axis=0)) > 0.05
    assert np.max(np.abs(compile_model(resnet_v1()).predict(x, verbose=0) - want)) > 0.05
    session = ort.InferenceSession(str(tmp_path / "cutmix_resnet20.onnx"), providers=["CPUExecutionProvider"])
    got = {"onnx": session.run(None, {session.get_inputs()[0].name: x})[0],
           "saved_model": _saved_model_in_a_graph_session(tmp_path / "saved_model", x),
           "h5": keras.models.load_model(str(tmp_path / "cutmix_resnet20.h5"), compile=False).predict(x, verbose=0)}
    for kind, y in got.items():
        assert y.shape == want.shape == (64, 10), kind
        diff = float(np.max(np.abs(y - want)))
        assert diff < EXPORT_ATOL, f"{kind}: outputs differ from Keras' by up to {diff:.3g}"


def test_eval_of_a_missing_checkpoint_fails_with_one_line(digits, tmp_path, capsys):
    import eval as evaluate
    assert cli.guard(evaluate.main, [f"--data_dir={digits}", f"--checkpoint={tmp_path / 'none'}"],
                     errors=evaluate.ERRORS) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "none" in err[0]


def test_tensorboard_flag_writes_event_files(noise, tmp_path):
    # tensorboard is in requirements.txt, so the flag must work, not just fail politely
    import train
    rc = train.main([f"--data_dir={noise}", f"--output_path={tmp_path / 'out'}", "--tensorboard", "--device=cpu",
                     "--epochs=1", "--batch_size=32", "--train_steps=1"])
    assert rc == 0 and list((tmp_path / "out" / "tensorboard").rglob("events.out.tfevents.*"))
