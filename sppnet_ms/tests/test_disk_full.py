"""save_ckpt on a real, small file system (tmpfs) that the second checkpoint does not fit."""
import os

import mindspore as ms
import numpy as np
import pytest

from common.checkpoint import CheckpointError
from common.smallfs import small_tmpfs
from common.ms import load_ckpt, save_ckpt

MIB = 1 << 20


def _params(seed):
    """1.5 MiB of float32 as the {'name', 'data'} items train.py saves."""
    w = np.random.default_rng(seed).standard_normal(384 * 1024, dtype=np.float32)
    return [{'name': 'fc1.weight', 'data': ms.Tensor(w)}], w


def test_full_disk_is_one_line_and_keeps_the_previous_checkpoint_without_staging_files():
    with small_tmpfs(2 * MIB) as fs:
        first, w = _params(0)
        save_ckpt(str(fs / 'zfnet-1.ckpt'), first, {'epoch': 1})
        with pytest.raises(CheckpointError) as err:
            save_ckpt(str(fs / 'zfnet-2.ckpt'), _params(1)[0], {'epoch': 2})
        msg = str(err.value)
        assert '\n' not in msg and str(fs / 'zfnet-2.ckpt') in msg and 'no space left' in msg.lower(), msg
        # neither our temp file nor the '<tmp>.ckpt' / '<tmp>.tmp' files MindSpore stages through is left
        assert os.listdir(fs) == ['zfnet-1.ckpt']
        np.testing.assert_array_equal(load_ckpt(str(fs / 'zfnet-1.ckpt'))['fc1.weight'].asnumpy(), w)
