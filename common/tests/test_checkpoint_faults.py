"""Checkpoint writes on a real full disk (a small tmpfs, not an injected ENOSPC) and after a SIGKILL mid-save."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common import checkpoint
from common.smallfs import small_tmpfs

ROOT = Path(__file__).resolve().parents[2]
MIB = 1 << 20


def _payload(seed, mib):
    """Float32 weights of about ``mib`` MiB (saved as .npy: a real checkpoint-sized, loadable file)."""
    return np.random.default_rng(seed).standard_normal(int(mib * MIB) // 4, dtype=np.float32)


def _save_npy(path, weights):
    def write(tmp):
        with open(tmp, "wb") as fh:
            np.save(fh, weights)
    return checkpoint.atomic_write(path, write)


def _free(folder):
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def _one_line_disk_full(err, path):
    text = str(err.value)
    assert "\n" not in text and str(path) in text and "no space left" in text.lower(), text


def test_full_disk_is_one_line_keeps_the_last_good_checkpoint_and_leaves_no_temp():
    with small_tmpfs(2 * MIB) as fs:
        first = _payload(0, 1.2)
        good = _save_npy(fs / "ckpt-1.npy", first)
        free_after_first = _free(fs)
        for name in ("ckpt-2.npy", "ckpt-1.npy"):  # a new file, and the same name written over
            with pytest.raises(checkpoint.CheckpointError) as err:
                _save_npy(fs / name, _payload(1, 1.2))
            _one_line_disk_full(err, fs / name)
            assert sorted(os.listdir(fs)) == ["ckpt-1.npy"]  # no temp file, no partial checkpoint
            np.testing.assert_array_equal(np.load(good), first)
            assert _free(fs) == free_after_first  # the partial temp file's space came back


def test_full_disk_during_a_directory_checkpoint_keeps_the_previous_folder():
    def tf_like(weights):  # a TensorFlow-style checkpoint: several files in one folder
        def write(tmp):
            np.save(os.path.join(tmp, "ckpt.data.npy"), weights)
            Path(tmp, "ckpt.index").write_text("index")
        return write

    with small_tmpfs(2 * MIB) as fs:
        first = _payload(2, 1.2)
        checkpoint.atomic_write_dir(fs / "epoch_0001", tf_like(first))
        with pytest.raises(checkpoint.CheckpointError) as err:
            checkpoint.atomic_write_dir(fs / "epoch_0002", tf_like(_payload(3, 1.2)))
        _one_line_disk_full(err, fs / "epoch_0002")
        assert sorted(os.listdir(fs)) == ["epoch_0001"]
        np.testing.assert_array_equal(np.load(fs / "epoch_0001" / "ckpt.data.npy"), first)


def test_a_writer_that_reports_a_full_disk_in_its_own_words_is_still_disk_full():
    # torch.save on this full tmpfs raises RuntimeError("[enforce fail at inline_container.cc:672] . unexpected
    # pos 576 vs 534"), without errno; TensorFlow raises ResourceExhaustedError. Both must read as a full disk.
    def framework_writer(tmp):
        with open(tmp, "wb") as fh:
            try:
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
            except OSError:
                pass
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    with small_tmpfs(4 * MIB) as fs:
        checkpoint.atomic_write_bytes(fs / "latest.pth", b"good")
        with pytest.raises(checkpoint.CheckpointError) as err:
            checkpoint.atomic_write(fs / "latest.pth", framework_writer)
        _one_line_disk_full(err, fs / "latest.pth")
        assert os.listdir(fs) == ["latest.pth"] and (fs / "latest.pth").read_bytes() == b"good"
        # the same error with room on the disk is a bug, not a full disk: it is not relabelled
        def bug(tmp):
            raise RuntimeError("unexpected pos")

        with pytest.raises(RuntimeError, match="unexpected pos") as err:
            checkpoint.atomic_write(fs / "latest.pth", bug)
        assert not isinstance(err.value, checkpoint.CheckpointError)


def test_small_tmpfs_in_a_user_namespace_is_real_and_goes_away():
    # the route for a machine without root; this one has both, so both are proven
    with small_tmpfs(MIB, how="unshare") as fs:
        assert "/proc/" in str(fs)
        with pytest.raises(OSError) as err:
            (fs / "big").write_bytes(b"\0" * (2 * MIB))
        assert err.value.errno == 28
    assert not fs.exists()


def test_temp_left_by_a_save_killed_mid_write_is_removed_on_resume(tmp_path):
    # a real SIGKILL inside atomic_write: the writer's clean-up never runs
    code = ("import os, signal, sys\nfrom common import checkpoint\n"
            "def write(tmp):\n    open(tmp, 'wb').write(b'half')\n    os.kill(os.getpid(), signal.SIGKILL)\n"
            "checkpoint.atomic_write(sys.argv[1], write)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "zfnet-2.ckpt")], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == -signal.SIGKILL
    (left,) = tmp_path.iterdir()
    assert left.name.startswith(".zfnet-2.ckpt.") and left.name.endswith(".tmp")
    # plus what other writers stage (MindSpore, a Saver folder), and files that are not temps
    staged = [".zfnet-3.ckpt.k2.tmp.ckpt", ".zfnet-3.ckpt.k2.tmp.tmp"]
    for name in staged:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / ".step_000000006.ab.tmp").mkdir()
    (tmp_path / ".step_000000006.ab.tmp" / "cspdarknet53.ckpt.index").write_bytes(b"x")
    keep = ["zfnet-1.ckpt", "notes.tmp", ".hidden", ".epoch_0002.old-77"]
    for name in keep:
        (tmp_path / name).write_bytes(b"k")
    said = []
    removed = checkpoint.remove_stale_temps(tmp_path, log=said.append)
    assert sorted(p.name for p in removed) == sorted([left.name, *staged, ".step_000000006.ab.tmp"])
    assert sorted(os.listdir(tmp_path)) == sorted(keep)
    assert len(said) == 4 and all("interrupted" in s for s in said)
