"""save_checkpoint on a real, small file system (tmpfs) that the second checkpoint does not fit.

torch.save reports a full disk as ``RuntimeError: [enforce fail at inline_container.cc] . unexpected pos``
(no errno); the run must still end with one line that says the disk is full."""
import os

import pytest
import torch

from common.checkpoint import CheckpointError
from common.smallfs import small_tmpfs
from mmcls_ext.checkpoint import safe_load, save_checkpoint

MIB = 1 << 20


def test_full_disk_is_one_line_and_keeps_the_previous_checkpoint():
    torch.manual_seed(0)
    model = torch.nn.Linear(512, 384)  # 0.75 MiB of weights, as much again of SGD momentum
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 512)).sum().backward()
    opt.step()
    with small_tmpfs(2 * MIB) as fs:
        save_checkpoint(model, fs / "epoch_1.pth", opt, meta={"epoch": 1, "iter": 2})
        with pytest.raises(CheckpointError) as err:
            save_checkpoint(model, fs / "epoch_2.pth", opt, meta={"epoch": 2, "iter": 4})
        msg = str(err.value)
        assert "\n" not in msg and str(fs / "epoch_2.pth") in msg and "no space left" in msg.lower(), msg
        assert os.listdir(fs) == ["epoch_1.pth"]
        ck = safe_load(fs / "epoch_1.pth")
        assert ck["meta"]["epoch"] == 1 and torch.equal(ck["state_dict"]["weight"], model.weight.detach())
        assert len(ck["optimizer"]["state"]) == 2
