"""A training run whose output folder is on a real, small file system (tmpfs) that the second checkpoint
does not fit: one ERROR line naming the file and the full disk, the first checkpoint intact, no temp file."""
import os

import numpy as np

from common.smallfs import small_tmpfs
from conftest import SMALL, python
from common.ms import load_ckpt

PREFIX = "train_tinydarknet_imagenet"
MIB = 1 << 20


def test_full_disk_at_the_second_checkpoint_stops_with_one_line_and_keeps_the_first(digits, tmp_path):
    train_only = tmp_path / "data"  # 4 images per class and no val folder: a quick start, no closing evaluation
    for cls in sorted((digits / "train").iterdir()):
        (train_only / "train" / cls.name).mkdir(parents=True)
        for img in sorted(cls.iterdir())[:4]:
            (train_only / "train" / cls.name / img.name).symlink_to(img)
    # one checkpoint is 7.3 MB at 32 px / 10 classes: 10 MiB holds the first, its summary and curves, not a second
    with small_tmpfs(10 * MIB) as fs:
        out = fs / "out"
        proc = python("train.py", f"--data_path={train_only}", f"--output_path={out}", "--batch_size=16",
                      "--train_steps=2", "--epoch_size=3", "--save_checkpoint_epochs=1", "--keep_checkpoint_max=2",
                      "--device_target=CPU", *SMALL, check=False)
        ckdir = out / "checkpoints" / "0"
        first, second = ckdir / f"{PREFIX}-1_2.ckpt", ckdir / f"{PREFIX}-2_2.ckpt"
        errors = [ln for ln in proc.stdout.splitlines() if ln.startswith("ERROR")]
        assert proc.returncode != 0 and len(errors) == 1, proc.stdout[-3000:]
        assert str(second) in errors[0] and "no space left" in errors[0].lower(), errors[0]
        assert "Traceback" not in proc.stdout
        assert sorted(os.listdir(ckdir)) == sorted([first.name, "summary.csv", "curves.png"])  # no temp files
        params = load_ckpt(first)  # CRC-checked read of every tensor
        assert int(params["epoch_num"].asnumpy()) == 1
        weights = [v.asnumpy() for k, v in params.items() if k.startswith("conv")]
        assert len(weights) > 40 and all(np.isfinite(w).all() for w in weights)
