"""Learning-rate schedule and parameter groups as the original."""
import math

import numpy as np

from src.config import get_config
from src.generator_lr import warmup_cosine_annealing_lr
from src.get_param_groups import get_param_groups
from src.sppnet import SppNet


def test_warmup_is_linear_then_cosine_constant_within_each_epoch():
    lr = warmup_cosine_annealing_lr(0.035, 10, 5, 150, 150)
    assert len(lr) == 1500
    np.testing.assert_allclose(lr[:50], 0.035 * np.arange(1, 51) / 50, rtol=1e-6)
    assert np.all(lr[50:60] == lr[50])
    assert math.isclose(lr[50], 0.035 * (1 + math.cos(math.pi * 5 / 150)) / 2, rel_tol=1e-6)
    assert lr[-1] < 1e-5


def test_160_epochs_with_period_150_rise_again_after_150():
    lr = warmup_cosine_annealing_lr(0.01, 1, 0, 160, 150)
    assert lr[150] < lr[159] and lr[0] == np.float32(0.01)


def test_hyper_parameters_of_the_original_config():
    z, s, m = get_config('zfnet'), get_config('sppnet_single'), get_config('sppnet_mult')
    assert (z.epoch_size, z.batch_size, z.lr_init, z.warmup_epochs) == (150, 256, 0.035, 5)
    assert (s.epoch_size, s.batch_size, s.lr_init, s.warmup_epochs) == (160, 256, 0.01, 0)
    assert (m.epoch_size, m.batch_size, m.lr_init, m.warmup_epochs) == (160, 128, 0.01, 2)
    assert z.momentum == 0.9 and z.weight_decay == 1e-4 and z.loss_scale == 1024 and z.seed == 44


def test_no_weight_decay_on_biases():
    no_decay, decay = get_param_groups(SppNet(10, train_model='zfnet', image_size=56))
    assert no_decay['weight_decay'] == 0.0 and 'weight_decay' not in decay
    assert all(p.name.endswith('.bias') for p in no_decay['params'])
    assert all(p.name.endswith('.weight') for p in decay['params'])
    assert len(no_decay['params']) == len(decay['params']) == 8
