"""A checkpoint of the original (mindspore-ai/models research/cv/SPPNet) loads and evaluates through eval.py.

The original's ``src/sppnet.py`` names its cells conv1..conv5 and fc1..fc3 (LRN, ReLU, pools and the SPP layer hold
no parameters), so its checkpoints hold ``<cell>.weight`` / ``<cell>.bias`` in MindSpore's layouts (Conv2d
[out, in, kh, kw], Dense [out, in]); its ``best.ckpt`` is ``save_checkpoint(train_network)``, which adds the
Momentum slots (``moments.<name>``), ``learning_rate``, ``momentum`` and ``global_step``. The table below is
written from the original's source, independently of ``src/sppnet.py``.
"""
import shutil
import sys

import numpy as np
import pytest

from conftest import RECIPE, digits_imagenet, run

NUM_CLASSES = 1000
# (cell, weight shape) in the original's construction order; every cell also has a bias of shape [out]
ORIGINAL_LAYERS = {
    'zfnet': [('conv1', (96, 3, 7, 7)), ('conv2', (256, 96, 5, 5)), ('conv3', (384, 256, 3, 3)),
              ('conv4', (384, 384, 3, 3)), ('conv5', (256, 384, 3, 3)),
              ('fc1', (4096, 6 * 6 * 256)), ('fc2', (4096, 4096)), ('fc3', (NUM_CLASSES, 4096))],
}
ORIGINAL_LAYERS['sppnet_single'] = [(n, s) if n != 'fc1' else ('fc1', (4096, (36 + 9 + 4 + 1) * 256))
                                    for n, s in ORIGINAL_LAYERS['zfnet']]
ORIGINAL_LAYERS['sppnet_mult'] = ORIGINAL_LAYERS['sppnet_single']


def original_parameters(model):
    """{name: shape} of the original's network parameters for ``model`` (1000 classes)."""
    out = {}
    for cell, shape in ORIGINAL_LAYERS[model]:
        out[f'{cell}.weight'] = shape
        out[f'{cell}.bias'] = (shape[0],)
    return out


@pytest.mark.parametrize('model', ['zfnet', 'sppnet_single', 'sppnet_mult'])
def test_our_parameters_are_the_originals_names_and_shapes(model):
    """Names, shapes and nothing else, for the network and for the Momentum slots of the optimiser train.py
    builds (MindSpore clones the parameters with the prefix ``moments.``, as the original's optimiser did)."""
    from mindspore import Tensor, nn
    from src.get_param_groups import get_param_groups
    from src.sppnet import SppNet
    net = SppNet(NUM_CLASSES, 'train', True, model, 224)
    ours = {p.name: tuple(p.shape) for p in net.get_parameters()}
    assert ours == original_parameters(model)
    opt = nn.Momentum(get_param_groups(net), learning_rate=Tensor(np.full(4, 0.01, np.float32)), momentum=0.9,
                      weight_decay=1e-4, loss_scale=1024)
    assert {m.name: tuple(m.shape) for m in opt.moments} == {f'moments.{k}': v for k, v in ours.items()}
    assert opt.global_step.name == 'global_step'


def _write_original_checkpoint(path, model, seed=0):
    """A checkpoint holding what the original's best.ckpt holds: the weights (He-scaled, so the logits are O(1)),
    their Momentum slots, the LR array, momentum and global_step; nothing of ours (no class names, no metadata)."""
    import mindspore as ms
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in original_parameters(model).items():
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        scale = np.sqrt(2.0 / fan_in) if len(shape) > 1 else 0.05
        weights[name] = rng.normal(0.0, scale, shape).astype(np.float32)
    entries = [{'name': n, 'data': ms.Tensor(v)} for n, v in weights.items()]
    entries += [{'name': f'moments.{n}', 'data': ms.Tensor(np.zeros_like(v))} for n, v in weights.items()]
    entries += [{'name': 'learning_rate', 'data': ms.Tensor(np.full(8, 0.01, np.float32))},
                {'name': 'momentum', 'data': ms.Tensor(np.float32(0.9))},
                {'name': 'global_step', 'data': ms.Tensor(np.array([8], np.int32))}]
    ms.save_checkpoint(entries, str(path))
    return weights


def _few_digits(dst, per_class=1):
    """The first ``per_class`` val images of each of the 10 digits classes, in their own folder."""
    src = digits_imagenet() / 'val'
    for cls in sorted(p.name for p in src.iterdir() if p.is_dir()):
        (dst / cls).mkdir(parents=True)
        for f in sorted((src / cls).iterdir())[:per_class]:
            shutil.copy(f, dst / cls / f.name)
    return dst


def test_an_original_checkpoint_evaluates_through_eval_py(tmp_path):
    """eval.py (the recipe's eval entry, 1000 classes, the original's square 256 resize and 224 centre crop) loads a
    ZFNet checkpoint written from the original's layer table, skipping its optimiser entries, and its logits on ten
    real digits images are those of a network built from the same weights."""
    import mindspore as ms
    from src.dataset import create_dataset_imagenet, load_split
    from src.sppnet import SppNet
    ckpt = tmp_path / 'best.ckpt'
    weights = _write_original_checkpoint(ckpt, 'zfnet')
    data = _few_digits(tmp_path / 'val')
    logits_file = tmp_path / 'logits.npz'
    proc = run([sys.executable, RECIPE / 'eval.py', '--test_model=zfnet', f'--data_path={data}',
                f'--ckpt_path={ckpt}', '--device_target=CPU', '--batch_size=5', '--vet_images=false',
                f'--logits_file={logits_file}'])
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert 'result : ' in proc.stdout and 'carries no class names' in proc.stdout
    got = np.load(logits_file)
    assert got['logits'].shape == (10, NUM_CLASSES) and list(got['labels']) == list(range(10))

    # the reference: the same weights loaded by name into a freshly built test-phase network, on the same images
    # through the evaluation transforms, all ten in one batch (eval.py ran batches of 5)
    net = SppNet(NUM_CLASSES, 'test', True, 'zfnet', 224)
    assert not ms.load_param_into_net(net, {n: ms.Parameter(ms.Tensor(v), name=n) for n, v in weights.items()})[0]
    net.set_train(False)
    samples, _ = load_split(data, 'val', vet=False)
    assert [str(p) for p, _ in samples] == [str(f) for f in got['files']]
    images, _ = next(create_dataset_imagenet(samples, 10, 'zfnet', False, 224, workers=1)
                     .create_tuple_iterator(output_numpy=True))
    want = net(ms.Tensor(images)).asnumpy()
    # same float32 weights and images on the same CPU; only the batch size differs (5 vs 10), which may change the
    # order of float32 sums: the logits (scale ~1) agree to 1e-4 relative. An untrained or partly loaded network is
    # off by O(1) (mutation check: a renamed parameter makes eval.py stop; this test then fails on its exit status).
    assert np.abs(want).max() > 0.1
    np.testing.assert_allclose(got['logits'], want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
