import errno
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common import checkpoint, compare, config, imagefolder, progress, summary
from common.cli import RecipeError

ROOT = Path(__file__).resolve().parents[2]


class TestAtomicCheckpoint:
    def test_failed_write_keeps_previous_file(self, tmp_path):
        p = tmp_path / "ckpt.bin"
        checkpoint.atomic_write_bytes(p, b"good")

        def crash(tmp):
            Path(tmp).write_bytes(b"half")
            raise KeyboardInterrupt  # Ctrl-C mid-save: the writer's clean-up runs

        with pytest.raises(KeyboardInterrupt):
            checkpoint.atomic_write(p, crash)
        assert p.read_bytes() == b"good"
        assert [f.name for f in tmp_path.iterdir()] == ["ckpt.bin"]  # no temp file left behind

    def test_sigkill_mid_write_keeps_previous_file(self, tmp_path):
        # SIGKILL: no clean-up runs; the old file must still be whole (the temp is removed on resume, see
        # test_checkpoint_faults.py::test_temp_left_by_a_save_killed_mid_write_is_removed_on_resume)
        p = tmp_path / "ckpt.bin"
        checkpoint.atomic_write_bytes(p, b"good" * 1000)
        code = ("import os, signal, sys\nfrom common import checkpoint\n"
                "def write(tmp):\n    open(tmp, 'wb').write(b'half')\n    os.kill(os.getpid(), signal.SIGKILL)\n"
                "checkpoint.atomic_write(sys.argv[1], write)\n")
        proc = subprocess.run([sys.executable, "-c", code, str(p)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert proc.returncode == -9
        assert p.read_bytes() == b"good" * 1000
        (temp,) = [f for f in tmp_path.iterdir() if f.name != "ckpt.bin"]
        assert temp.read_bytes() == b"half"

    def test_written_file_gets_normal_permissions_not_owner_only(self, tmp_path):
        p = checkpoint.atomic_write_text(tmp_path / "record.json", "{}")
        mask = os.umask(0)
        os.umask(mask)
        assert p.stat().st_mode & 0o777 == 0o666 & ~mask
        d = checkpoint.atomic_write_dir(tmp_path / "saved", lambda t: Path(t, "a").write_text("1"))
        assert d.stat().st_mode & 0o777 == 0o777 & ~mask

    def test_disk_full_is_one_clear_error_and_keeps_last_good(self, tmp_path):
        p = tmp_path / "ckpt.bin"
        checkpoint.atomic_write_bytes(p, b"good")

        def full(tmp):
            raise OSError(errno.ENOSPC, "No space left on device")

        with pytest.raises(checkpoint.CheckpointError, match="disk full while saving"):
            checkpoint.atomic_write(p, full)
        assert p.read_bytes() == b"good"

    def test_directory_checkpoint_is_swapped_whole(self, tmp_path):
        d = tmp_path / "saved_model"
        checkpoint.atomic_write_dir(d, lambda t: Path(t, "a").write_text("1"))
        checkpoint.atomic_write_dir(d, lambda t: Path(t, "b").write_text("2"))
        assert sorted(f.name for f in d.iterdir()) == ["b"]
        with pytest.raises(RuntimeError):
            checkpoint.atomic_write_dir(d, lambda t: (_ for _ in ()).throw(RuntimeError("boom")))
        assert sorted(f.name for f in d.iterdir()) == ["b"]
        assert sorted(f.name for f in tmp_path.iterdir()) == ["saved_model"]

    def test_latest_valid_skips_corrupt_newest_and_says_so(self, tmp_path):
        old, new = tmp_path / "a.ckpt", tmp_path / "b.ckpt"
        old.write_text("ok")
        new.write_text("trunc")
        os.utime(old, (1, 1))
        said = []
        got = checkpoint.latest_valid([old, new], lambda p: p.read_text() == "ok", log=said.append)
        assert got == old and "skipping" in said[0] and str(new) in said[0]


    def test_latest_valid_orders_by_the_key_not_the_file_time(self, tmp_path):
        # epoch 10 written first (older mtime), epoch 9 copied in later: the key, not the mtime, decides
        paths = [tmp_path / f"epoch_{e}" for e in (9, 10)]
        for p in paths:
            p.write_text("ok")
        os.utime(paths[1], (1, 1))
        epoch = lambda p: int(p.name.split("_")[1])  # noqa: E731
        assert checkpoint.latest_valid(paths, lambda p: True) == paths[0]  # the default: modification time
        assert checkpoint.latest_valid(paths, lambda p: True, key=epoch) == paths[1]

class TestImageFolder:
    def make(self, tmp_path):
        from PIL import Image
        root = tmp_path / "train"
        for c in ("n1", "n2"):
            (root / c).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(np.full((8, 8, 3), 60 * i, np.uint8)).save(root / c / f"{i}.JPEG", "JPEG")
        return root

    def test_lists_sorted_classes(self, tmp_path):
        samples, classes = imagefolder.list_images(self.make(tmp_path))
        assert classes == ["n1", "n2"] and len(samples) == 4 and samples[-1][1] == 1

    def test_val_is_labelled_by_the_class_names_of_training(self, tmp_path):
        # an empty folder and a stray lost+found in train, a class missing from val: no label may move
        from PIL import Image
        train = self.make(tmp_path)
        for c in ("aaa_empty", "lost+found"):
            (train / c).mkdir()
        (train / "n3").mkdir()
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(train / "n3" / "0.JPEG", "JPEG")
        val = tmp_path / "val"
        for c in ("n2", "n3"):
            (val / c).mkdir(parents=True)
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(val / c / "0.JPEG", "JPEG")
        said = []
        train_samples, classes = imagefolder.list_images(train, log=said.append)
        assert classes == ["n1", "n2", "n3"] and sorted(set(lab for _, lab in train_samples)) == [0, 1, 2]
        assert len(said) == 2 and all("holds no image" in line for line in said)
        assert "aaa_empty" in said[0] and "lost+found" in said[1]
        assert imagefolder.class_names(train) == classes  # the head size, known without listing every image
        val_samples, val_classes = imagefolder.list_images(val, classes=classes)
        assert val_classes == classes
        assert [(Path(p).parent.name, lab) for p, lab in val_samples] == [("n2", 1), ("n3", 2)]
        # numbered on its own, val would have said n2 = 0: the shift this guards against
        assert imagefolder.list_images(val)[0][0][1] == 0

    def test_a_val_class_training_never_saw_stops_with_its_folder(self, tmp_path):
        from PIL import Image
        train = self.make(tmp_path)
        val = tmp_path / "val"
        for c in ("n1", "zz_new"):
            (val / c).mkdir(parents=True)
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(val / c / "0.JPEG", "JPEG")
        (val / "empty_extra").mkdir()  # empty: reported and left out, not an error
        _, classes = imagefolder.list_images(train)
        with pytest.raises(imagefolder.ImageFolderError) as exc:
            imagefolder.list_images(val, classes=classes, log=lambda _m: None)
        assert str(val / "zz_new") in str(exc.value) and "\n" not in str(exc.value)

    def test_class_names_round_trip_through_a_uint8_array(self):
        names = ["n01440764", "ünï cödé", "with space"]
        arr = imagefolder.encode_classes(names)
        assert arr.dtype == np.uint8 and imagefolder.decode_classes(arr) == names
        with pytest.raises(imagefolder.ImageFolderError, match="ckpt_x: damaged"):
            imagefolder.decode_classes(arr[:-3], where="ckpt_x")

    def test_resolve_split_accepts_parent_or_split(self, tmp_path):
        root = self.make(tmp_path)
        assert imagefolder.resolve_split(tmp_path, "train") == root
        assert imagefolder.resolve_split(root, "train") == root
        with pytest.raises(imagefolder.ImageFolderError, match="does not exist"):
            imagefolder.resolve_split(tmp_path / "x", "train")

    @pytest.mark.parametrize("kind, problem", [("zero", "zero-byte"), ("trunc", "cannot decode"), ("png", "is PNG"),
                                               ("garbage", "cannot decode")])
    def test_bad_images_stop_with_path_or_are_skipped(self, tmp_path, kind, problem):
        from PIL import Image
        root = self.make(tmp_path)
        bad = root / "n1" / "bad.JPEG"
        if kind == "zero":
            bad.write_bytes(b"")
        elif kind == "trunc":
            good = (root / "n1" / "1.JPEG").read_bytes()
            bad.write_bytes(good[: len(good) // 2])
        elif kind == "png":
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(bad, "PNG")
        else:
            bad.write_bytes(os.urandom(200))
        samples, _ = imagefolder.list_images(root)
        with pytest.raises(imagefolder.ImageFolderError) as exc:
            imagefolder.vet_images(samples)
        assert str(bad) in str(exc.value) and problem in str(exc.value)
        said = []
        good, skipped = imagefolder.vet_images(samples, skip_bad=True, log=said.append)
        assert len(good) == 4 and skipped[0][0] == str(bad) and said[-1].startswith("skipped 1 bad image")

    def test_cmyk_jpeg_is_accepted(self, tmp_path):
        from PIL import Image
        p = tmp_path / "c.JPEG"
        Image.new("CMYK", (8, 8), (0, 50, 100, 0)).save(p, "JPEG")
        assert imagefolder.check_image(p) == ""


def test_summary_csv_and_png(tmp_path):
    s = summary.EpochSummary(tmp_path / "summary.csv")
    for e in range(1, 4):
        s.add(e, train_loss=1.0 / e, eval_top1=0.3 * e, eval_top5=0.9, lr=0.1, images_per_sec=100.0, time_sec=2.0)
    s2 = summary.EpochSummary(tmp_path / "summary.csv", resume=True)
    s2.add(3, train_loss=0.2, eval_top1=0.95)  # a resumed run repeats epoch 3
    rows = summary.read_summary(tmp_path / "summary.csv")
    assert [r["epoch"] for r in rows] == ["1", "2", "3"] and rows[-1]["eval_top1"] == "0.95"
    png = summary.plot_curves(tmp_path / "summary.csv", tmp_path / "curves.png")
    from PIL import Image
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size == (1000, 400)


def test_progress_plain_lines_when_not_a_tty():
    buf = io.StringIO()
    p = progress.Progress(total_steps=4, batch_size=8, stream=buf, every=2)
    for i in range(4):
        p.update(epoch=1, step=i + 1, loss=0.5, lr=0.1)
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in buf.getvalue() and "[4/4]" in lines[-1] and "img/s" in lines[-1]


def test_progress_rate_leaves_out_the_time_between_epochs(monkeypatch):
    """An evaluation between two epochs is no training time: the first line of the next epoch must not show
    its images per second diluted by it (a 3 s evaluation showed 2.7 img/s for a 12.6 img/s ZFNet)."""
    clock = [0.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: clock[0])
    buf = io.StringIO()
    p = progress.Progress(total_steps=8, batch_size=8, stream=buf, every=2)
    for epoch in (1, 2):
        for i in range(4):
            clock[0] += 0.5  # one step: 8 images in 0.5 s
            p.update(epoch=epoch, step=i + 1, loss=0.5, lr=0.1)
        p.end_epoch()
        clock[0] += 30.0  # evaluation and a checkpoint
    rates = [float(line.split(" img/s")[0].rsplit(" ", 1)[1]) for line in buf.getvalue().splitlines()]
    assert rates == [16.0, 16.0, 16.0, 16.0]
    assert "ETA 00:00" in buf.getvalue().splitlines()[-1]


class TestConfig:
    def parser(self):
        import argparse
        ap = argparse.ArgumentParser()
        ap.add_argument("--lr", type=float, default=0.1)
        ap.add_argument("--epochs", type=int, default=5)
        return ap

    def test_command_line_beats_config_beats_default(self):
        args = config.parse_args(self.parser(), ["--epochs", "7"], {"lr": 0.5, "epochs": 3})
        assert args.lr == 0.5 and args.epochs == 7

    def test_unknown_config_key_fails_loudly(self, tmp_path):
        p = tmp_path / "c.json"
        p.write_text(json.dumps({"lr": 0.5, "lr_shedule": "cos"}))
        with pytest.raises(config.ConfigError, match="unknown key.*lr_shedule"):
            config.parse_args(self.parser(), [], p)

    def test_unparsable_config_names_the_file(self, tmp_path):
        p = tmp_path / "c.json"
        p.write_text("{")
        with pytest.raises(config.ConfigError, match=str(p)):
            config.parse_args(self.parser(), [], p)


def _record(tmp_path, name, ips, acc):
    p = tmp_path / name
    p.write_text(json.dumps({"network": "n", "images_per_sec": ips, "accuracy": acc, "device": "cpu"}))
    return str(p)


def test_compare_flags_regressions_beyond_threshold(tmp_path, capsys):
    base = _record(tmp_path, "npu.json", 1000.0, 0.66)
    ok = _record(tmp_path, "gpu_ok.json", 980.0, 0.661)
    slow = _record(tmp_path, "gpu_slow.json", 800.0, 0.66)
    assert compare.main([base, ok]) == 0
    assert compare.main([base, ok, slow, "--threshold", "0.05"]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION: gpu_slow.json: images/sec" in out and "-20.0%" in out


def test_compare_rejects_non_records(tmp_path):
    p = tmp_path / "x.json"
    p.write_text("[1]")
    with pytest.raises(RecipeError, match="x.json: not a run record"):
        compare.main([str(p)])
    proc = subprocess.run([sys.executable, "-m", "common.compare", str(p), str(tmp_path / "missing.json")],
                          capture_output=True, text=True, cwd=Path(compare.__file__).resolve().parents[1])
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith("x.json: not a run record (needs images_per_sec and accuracy)")


def test_env_sh_parses_test_flags_and_rejects_bad_ones(tmp_path):
    script = f"""
    export MZ_RECIPE_DIR={tmp_path}
    MZ_PYTHON={sys.executable}
    source {ROOT}/common/sh/env.sh mindspore 2>/dev/null || true
    mz_parse_test_args "$@" || exit $?
    echo "$data_path|$output_path|$train_epochs|$batch_size|$device|${{MZ_EXTRA_ARGS[*]}}"
    """
    run = lambda *a: subprocess.run(["bash", "-c", script, "x", *a], capture_output=True, text=True, cwd=tmp_path)
    (tmp_path / "d").mkdir()
    r = run("--data_path=d", "--train_epochs=3", "--batch_size=8", "--device=cpu", "--foo=1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{tmp_path}/d|{tmp_path}/test/output/0|3|8|cpu|--foo=1"
    assert "required" in run("--train_epochs=3").stderr
    assert run("--data_path=nope").returncode == 2
    bad = run("--data_path=d", "--batch_size=0")
    assert bad.returncode == 2 and "positive integer" in bad.stderr
    assert run("--data_path=d", "--device=tpu").returncode == 2
