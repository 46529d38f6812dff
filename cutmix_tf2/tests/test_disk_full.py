"""checkpointing.save on a real, small file system (tmpfs) that the second checkpoint does not fit.

TensorFlow reports a full disk as ResourceExhaustedError; training must still end with one line."""
import os

import numpy as np
import pytest

from common.checkpoint import CheckpointError
from common.smallfs import small_tmpfs

MIB = 1 << 20


def test_full_disk_is_one_line_and_keeps_the_previous_checkpoint():
    import tf_keras as keras

    from src import checkpointing
    from src.model import resnet_v1
    keras.utils.set_random_seed(0)
    model = resnet_v1()  # 3.3 MB with its Adam slots
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    checkpointing.build_optimizer_state(model)
    with small_tmpfs(5 * MIB) as fs:
        checkpointing.save(fs, 1, model)
        with pytest.raises(CheckpointError) as err:
            checkpointing.save(fs, 2, model)
        msg = str(err.value)
        assert "\n" not in msg and str(fs / "epoch_0002") in msg and "no space left" in msg.lower(), msg
        assert os.listdir(fs) == ["epoch_0001"]
        other = resnet_v1()
        other.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
        assert checkpointing.restore(fs / "epoch_0001", other) == 1  # size and hash of every file checked
        for a, b in zip(model.get_weights(), other.get_weights()):
            np.testing.assert_array_equal(a, b)
