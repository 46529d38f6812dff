"""A checkpoint of the original (mindspore-ai/models research/cv/tinydarknet) loads and evaluates through eval.py.

The original's ``src/tinydarknet.py`` builds conv1..conv16, each a block with cells ``conv`` (Conv2d, no bias),
``bn`` (BatchNorm2d) and ``leakyrelu``; conv16 always has 1000 outputs. Its ModelCheckpoint saves the train network:
``conv<i>.conv.weight`` [out, in, k, k], ``conv<i>.bn.{gamma,beta,moving_mean,moving_variance}`` [out], the
Momentum slots ``moments.<trainable name>``, ``learning_rate``, ``momentum`` and ``global_step``. The table below is
written from the original's source, independently of ``src/tinydarknet.py``.
"""
import shutil

import numpy as np
import pytest

from conftest import DIGITS, python

NUM_CLASSES = 1000
# (kernel, in, out) of conv1..conv16 in the original's __init__
ORIGINAL_BLOCKS = [(3, 3, 16), (3, 16, 32), (1, 32, 16), (3, 16, 128), (1, 128, 16), (3, 16, 128), (1, 128, 32),
                   (3, 32, 256), (1, 256, 32), (3, 32, 256), (1, 256, 64), (3, 64, 512), (1, 512, 64),
                   (3, 64, 512), (1, 512, 128), (1, 128, NUM_CLASSES)]
BN_TRAINABLE = ("gamma", "beta")
BN_STATISTICS = ("moving_mean", "moving_variance")


def original_parameters():
    """{name: shape} of the original network's parameters (trainable and BN statistics)."""
    out = {}
    for i, (k, cin, cout) in enumerate(ORIGINAL_BLOCKS, start=1):
        out[f"conv{i}.conv.weight"] = (cout, cin, k, k)
        for name in BN_STATISTICS + BN_TRAINABLE:
            out[f"conv{i}.bn.{name}"] = (cout,)
    return out


def test_our_parameters_are_the_originals_names_and_shapes():
    """Names and shapes of every parameter (BN statistics included), and the Momentum slots train.py's optimiser
    makes (``moments.`` + the trainable names, as the original's)."""
    import mindspore as ms
    from src.tinydarknet import TinyDarkNet
    net = TinyDarkNet(NUM_CLASSES)
    ours = {p.name: tuple(p.shape) for p in net.get_parameters()}
    assert ours == original_parameters()
    trainable = {p.name for p in net.trainable_params()}
    assert trainable == {n for n in ours if not n.endswith(BN_STATISTICS)}
    opt = ms.nn.Momentum(net.trainable_params(), learning_rate=0.1, momentum=0.9)
    assert {m.name for m in opt.moments} == {f"moments.{n}" for n in trainable}
    assert opt.global_step.name == "global_step"


def _write_original_checkpoint(path, seed=0):
    """What the original's ModelCheckpoint writes: weights (He-scaled; BN statistics and affine drawn around their
    neutral values so every layer matters), Momentum slots, LR array, momentum, global_step; nothing of ours."""
    import mindspore as ms
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in original_parameters().items():
        if name.endswith("conv.weight"):
            weights[name] = rng.normal(0, np.sqrt(2.0 / np.prod(shape[1:])), shape)
        elif name.endswith(("gamma", "moving_variance")):
            weights[name] = rng.uniform(0.5, 1.5, shape)
        else:  # beta, moving_mean
            weights[name] = rng.normal(0, 0.1, shape)
        weights[name] = weights[name].astype(np.float32)
    entries = [{"name": n, "data": ms.Tensor(v)} for n, v in weights.items()]
    entries += [{"name": f"moments.{n}", "data": ms.Tensor(np.zeros_like(v))} for n, v in weights.items()
                if not n.endswith(BN_STATISTICS)]
    entries += [{"name": "learning_rate", "data": ms.Tensor(np.full(8, 0.1, np.float32))},
                {"name": "momentum", "data": ms.Tensor(np.float32(0.9))},
                {"name": "global_step", "data": ms.Tensor(np.array([8], np.int32))}]
    ms.save_checkpoint(entries, str(path))
    return weights


def _few_digits(dst):
    """The first val image of each of the 10 digits classes, in their own folder."""
    src = DIGITS / "imagenet" / "val"
    if not src.is_dir():
        pytest.fail(f"{src}: digits data missing: run make data")
    for cls in sorted(p.name for p in src.iterdir() if p.is_dir()):
        (dst / cls).mkdir(parents=True)
        first = sorted((src / cls).iterdir())[0]
        shutil.copy(first, dst / cls / first.name)
    return dst


def test_an_original_checkpoint_evaluates_through_eval_py(tmp_path):
    """eval.py (the recipe's eval entry: 1000 classes, short side 256, centre crop 224) loads a checkpoint written
    from the original's layer table, skipping its optimiser entries, and its logits on ten real digits images are
    those of the original's cells (nn.LeakyReLU, leaky='max') built from the same weights."""
    import mindspore as ms
    from src.dataset import create_dataset_imagenet, load_samples
    from src.tinydarknet import TinyDarkNet
    ckpt = tmp_path / "train_tinydarknet_imagenet-500_1251.ckpt"
    weights = _write_original_checkpoint(ckpt)
    val = _few_digits(tmp_path / "val")
    logits_file = tmp_path / "logits.npz"
    proc = python("eval.py", f"--val_data_dir={val}", f"--checkpoint_path={ckpt}", "--device_target=CPU",
                  "--batch_size=5", "--num_parallel_workers=1", "--check_images=False",
                  f"--logits_file={logits_file}")
    assert "accuracy: " in proc.stdout and "no class names in this checkpoint" in proc.stdout
    got = np.load(logits_file)
    assert got["logits"].shape == (10, NUM_CLASSES) and list(got["labels"]) == list(range(10))

    net = TinyDarkNet(NUM_CLASSES, leaky="max")
    assert not ms.load_param_into_net(net, {n: ms.Parameter(ms.Tensor(v), name=n) for n, v in weights.items()})[0]
    net.set_train(False)
    samples, _ = load_samples(val, check=False)
    assert [str(p) for p, _ in samples] == [str(f) for f in got["files"]]
    images, _ = next(create_dataset_imagenet(samples, False, 10, 224, num_parallel_workers=1)
                     .create_tuple_iterator(output_numpy=True))
    want = net(ms.Tensor(images)).asnumpy()
    # same float32 weights and images on the same CPU; eval.py ran batches of 5 and the mix form of LeakyReLU
    # (0.2x + 0.8 relu(x), equal up to rounding), so the logits agree to float32 rounding: 1e-4 relative to their
    # scale. A network that skipped a parameter (mutation check: a renamed one) makes eval.py stop instead.
    assert np.abs(want).max() > 0.1
    np.testing.assert_allclose(got["logits"], want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
