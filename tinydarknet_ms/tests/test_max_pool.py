"""--max_pool: the compiled 2x2 max-pool computes what nn.MaxPool2d computes, and auto picks it only where it may."""
import numpy as np
import pytest
import mindspore as ms

from common import cputune, native
from src import max_pool
from src.tinydarknet import TinyDarkNet


def _maps(shape, seed=0):
    return ms.Tensor(np.random.default_rng(seed).normal(0, 1, shape).astype(np.float32))


@pytest.mark.parametrize("mode", [ms.PYNATIVE_MODE, ms.GRAPH_MODE])
def test_kernel_pool_output_and_gradient_equal_nn_max_pool(mode):
    ms.set_context(mode=mode)
    try:
        x = _maps((3, 5, 12, 8))
        w = _maps((3, 5, 6, 4), seed=1)  # a different weight per output: each gradient lands where it belongs
        kernel, original = max_pool.make("kernel"), max_pool.make("nn")
        np.testing.assert_array_equal(kernel(x).asnumpy(), original(x).asnumpy())

        def weighted(pool):
            def fn(t):
                return (pool(t) * w).sum()
            return fn
        g_kernel = ms.grad(weighted(kernel))(x).asnumpy()
        g_original = ms.grad(weighted(original))(x).asnumpy()
        np.testing.assert_array_equal(g_kernel, g_original)
        assert np.count_nonzero(g_kernel) == w.size  # one element per window
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)


def test_network_with_kernel_pools_trains_as_the_original_network():
    x, labels = _maps((4, 3, 32, 32)), ms.Tensor(np.arange(4, dtype=np.int32))
    grads = {}
    for impl in ("kernel", "nn"):
        ms.set_seed(3)
        net = TinyDarkNet(10, max_pool=impl)
        loss = ms.nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
        fn = ms.value_and_grad(lambda a, b: loss(net(a), b), None, net.trainable_params())
        value, g = fn(x, labels)
        grads[impl] = (value.asnumpy(), [t.asnumpy() for t in g])
    np.testing.assert_array_equal(grads["kernel"][0], grads["nn"][0])
    for a, b in zip(grads["kernel"][1], grads["nn"][1]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_auto_keeps_the_original_off_cpu_and_where_the_kernel_cannot_run():
    assert max_pool.resolve("auto", "GPU", 224, "O2") == "nn"
    assert cputune.decisions()["max_pool"].how == "rule"
    assert max_pool.resolve("auto", "Ascend", 224, "O3") == "nn"
    assert max_pool.resolve("auto", "CPU", 40, "O0") == "nn"  # 40 px: the third pool would pad
    assert "multiple of 16" in cputune.decisions()["max_pool"].note
    assert max_pool.resolve("auto", "CPU", 224, "O2") == "nn"  # fp16 maps
    assert max_pool.resolve("nn", "CPU", 224, "O0") == "nn"
    with pytest.raises(ValueError, match="multiple of 16"):
        max_pool.resolve("kernel", "CPU", 40, "O0")
    with pytest.raises(ValueError, match="--max_pool"):
        max_pool.resolve("avg", "CPU", 224, "O0")


def test_auto_falls_back_to_the_original_without_a_compiler(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELZOO_KERNEL_CACHE", str(tmp_path / "kernels"))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    assert max_pool.resolve("auto", "CPU", 224, "O0") == "nn"
    decision = cputune.decisions()["max_pool"]
    assert decision.how == "fallback" and "no C++ compiler" in decision.note
    with pytest.raises(ValueError, match=r"no C\+\+ compiler"):
        max_pool.resolve("kernel", "CPU", 224, "O0")


def test_a_damaged_cached_library_is_built_again(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELZOO_KERNEL_CACHE", str(tmp_path))
    cxx, _ = native.compiler()
    path = native.library_path(max_pool.SOURCE, "max_pool_2x2", max_pool.build_commands(cxx))
    path.write_bytes(b"\x7fELF" + bytes(96))  # what a full disk leaves: a cut-short file
    assert max_pool.library() == str(path)
    assert path.stat().st_size > 1000
    max_pool._check(str(path))  # loads, both symbols present
    assert not list(tmp_path.glob("*.tmp"))


def test_auto_on_cpu_is_probed_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELZOO_TUNE_CACHE", str(tmp_path / "tune"))
    first = max_pool.resolve("auto", "CPU", 32, "O0")
    decision = cputune.decisions()["max_pool"]
    assert decision.how == "probed" and set(decision.seconds) == {"nn", "kernel"}
    assert first == decision.choice
    assert max_pool.resolve("auto", "CPU", 32, "O0") == first
    assert cputune.decisions()["max_pool"].how == "cached"
