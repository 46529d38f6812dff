"""ckpt.save on a real, small file system (tmpfs) that the second checkpoint does not fit.

A Saver reports a full disk as ResourceExhaustedError; training must still end with one line."""
import os

import numpy as np
import pytest
import tensorflow as tf

import ckpt
from common.checkpoint import CheckpointError
from common.smallfs import small_tmpfs

tf1 = tf.compat.v1
MIB = 1 << 20


def test_full_disk_is_one_line_and_keeps_the_previous_checkpoint():
    g = tf.Graph()
    with g.as_default(), tf1.Session(graph=g) as sess:
        w = tf1.get_variable("w", initializer=np.random.default_rng(0).standard_normal((384, 1024), np.float32))
        step = tf1.train.get_or_create_global_step()
        train = tf1.train.MomentumOptimizer(0.1, 0.9).minimize(tf.reduce_sum(w * w), global_step=step)
        saver = tf1.train.Saver(max_to_keep=None)
        sess.run(tf1.global_variables_initializer())
        sess.run(train)
        kept = sess.run(w)
        with small_tmpfs(5 * MIB) as fs:  # one checkpoint (weights + momentum) is 3 MiB
            ckpt.save(sess, saver, fs, epoch=0, global_step=3, seed=1, batch_size=16, val_accuracy=None)
            sess.run(train)
            with pytest.raises(CheckpointError) as err:
                ckpt.save(sess, saver, fs, epoch=1, global_step=6, seed=1, batch_size=16, val_accuracy=None)
            msg = str(err.value)
            folder = fs / "ckpt" / "step_000000006"
            assert "\n" not in msg and str(folder) in msg and "no space left" in msg.lower(), msg
            assert os.listdir(fs / "ckpt") == ["step_000000003"]
            assert not [n for n in os.listdir(fs) if n.startswith(".")]  # no temp folder or link
            state = ckpt.find_resume(str(fs / "ckpt" / "step_000000003"), fs)
            assert state["global_step"] == 3
            np.testing.assert_array_equal(ckpt.check(state["prefix"]).get_tensor("w"), kept)
