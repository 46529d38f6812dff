"""--bn_impl kernel: the compiled normalisation + Mish kernel against the original's ops and float64, and
how its library is built, cached, rebuilt when damaged, and reported when it cannot be built."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import kernels
import utils
from common import cputune
from conftest import RECIPE, env

tf1 = tf.compat.v1


def _float64_reference(x, dy):
    x = x.astype(np.float64)
    mean, var = x.mean(0), ((x - x.mean(0)) ** 2).mean(0)
    rstd = 1 / np.sqrt(var + 1e-3)
    v = (x - mean) * rstd
    t = np.tanh(np.logaddexp(0, v))
    g = dy * (t + v * (1 - t * t) / (1 + np.exp(-v)))
    return v * t, rstd * (g - g.mean(0) - v * (g * v).mean(0))


# batch 1 (zero variance), a 1x1 map, and 16 x 2673 positions: several 256-position work items, the last
# one partial and of a length that is no multiple of the vector width; values reaching |v| > 20 (clamp)
@pytest.mark.parametrize("shape", [(5, 4, 4, 3), (1, 2, 2, 6), (8, 1, 1, 16), (16, 9, 9, 33)])
def test_kernel_equals_the_original_ops_and_float64(shape):
    rng = np.random.RandomState(sum(shape))
    x_val = (rng.randn(*shape) * 3 + 1).astype(np.float32)
    if shape[0] > 2:
        x_val[0] = 1e4  # one image far off: the others normalise to about -0.4, it to about +sqrt(B - 1)
        x_val[1, ..., 0] = -1e4
    dy_val = rng.randn(*shape).astype(np.float32)
    results = {}
    for impl in ("moments", "kernel"):
        graph = tf.Graph()
        with graph.as_default():
            x = tf1.constant(x_val)
            y = (kernels.batch_norm_mish(x) if impl == "kernel" else utils.mish(utils.batch_norm(x)))
            with tf1.Session(graph=graph) as sess:
                results[impl] = sess.run([y] + tf1.gradients(y, [x], tf1.constant(dy_val)))
            results[impl + "_ops"] = {op.type for op in graph.get_operations()}
    assert {"ModelzooBatchNormMish", "ModelzooBatchNormMishGrad"} <= results["kernel_ops"]
    assert not {"Softplus", "Tanh", "FusedBatchNormV3", "Mean"} & results["kernel_ops"]
    z64, dx64 = _float64_reference(x_val, dy_val)
    for name, ref in (("z", z64), ("dx", dx64)):
        got, ops = (results[impl][name == "dx"] for impl in ("kernel", "moments"))
        scale = max(np.abs(ref).max(), 1e-30)
        # measured: kernel 1.2e-7 relative (as close to float64 as the original's ops, 1.1e-7)
        assert np.abs(got - ref).max() / scale < 2e-6, name
        np.testing.assert_allclose(got, ops, rtol=1e-4, atol=1e-5 * max(1.0, scale))
    if shape[0] == 1:  # one image: every position is its own mean, so z = mish(0) = 0 and no gradient
        assert not results["kernel"][0].any() and not results["kernel"][1].any()


def test_kernel_rejects_an_empty_batch():
    graph = tf.Graph()
    with graph.as_default(), tf1.Session(graph=graph) as sess:
        with pytest.raises(tf.errors.InvalidArgumentError, match="non-empty batch"):
            sess.run(kernels.batch_norm_mish(tf1.zeros([0, 2, 2, 3])))


_LOADER = textwrap.dedent("""
    import sys, kernels
    from models import cspdarknet53
    try:
        print("impl", cspdarknet53.select_bn_impl(sys.argv[1], "cpu", "matmul"))
    except kernels.KernelUnavailable as exc:
        print("unavailable", exc); sys.exit(3)
""")


def _loader(impl, extra_env, wait=True):
    cmd = [sys.executable, "-c", _LOADER, impl]
    proc = subprocess.Popen(cmd, cwd=RECIPE, env={**env(), **extra_env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    return proc.communicate(timeout=600) + (proc.returncode,) if wait else proc


def test_library_is_built_once_by_concurrent_ranks_and_a_damaged_one_is_rebuilt(tmp_path):
    cache = {"MODELZOO_KERNEL_CACHE": str(tmp_path / "kernels")}
    os.environ["MODELZOO_KERNEL_CACHE"] = cache["MODELZOO_KERNEL_CACHE"]
    try:
        _, path = kernels.library_path()
    finally:
        del os.environ["MODELZOO_KERNEL_CACHE"]
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a shared library")  # e.g. a copy cut short by a full disk
    # two "ranks" start at once: each fails to load the damaged file, one rebuilds under the lock, both load
    procs = [_loader("kernel", cache, wait=False) for _ in range(2)]
    # one of them compiles (the whole test took 402 s on the loaded 2-core test host): 3x that, and more
    outs = [p.communicate(timeout=1500) + (p.returncode,) for p in procs]
    for out, err, rc in outs:
        assert rc == 0 and "impl kernel" in out, err[-2000:]
    assert path.read_bytes()[:4] == b"\x7fELF"
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([path.name, f".{path.name}.lock"])
    # a rebuild replaces the file by a rename: a new inode, whatever the file system's time resolution
    built = (path.stat().st_ino, path.stat().st_mtime_ns, path.read_bytes())
    out, err, rc = _loader("kernel", cache)  # a later run uses the cached library as it is
    assert rc == 0 and "impl kernel" in out, err[-2000:]
    assert (path.stat().st_ino, path.stat().st_mtime_ns, path.read_bytes()) == built


def test_without_a_compiler_auto_falls_back_and_kernel_is_a_one_line_error(tmp_path):
    no_cxx = {"MODELZOO_KERNEL_CACHE": str(tmp_path / "kernels"), "CXX": "no-such-compiler"}
    out, err, rc = _loader("auto", no_cxx)
    assert rc == 0 and ("impl fused" in out or "impl moments" in out), err[-2000:]
    assert ("--bn_impl auto: the CPU kernel is unavailable (no C++ compiler: 'no-such-compiler' is not on PATH "
            "(set $CXX)); choosing between fused and moments") in out
    proc = subprocess.run([sys.executable, RECIPE / "train.py", "--bn_impl", "kernel", "--data_path",
                           tmp_path / "none", "--output_path", tmp_path / "out"], cwd=RECIPE,
                          env={**env(), **no_cxx}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if "no C++ compiler" in line]
    assert len(lines) == 1 and "'no-such-compiler' is not on PATH" in lines[0], proc.stderr[-2000:]
    assert not (tmp_path / "kernels").exists() or not any((tmp_path / "kernels").glob("*.so"))


def test_kernel_is_cpu_only():
    from models import cspdarknet53
    with pytest.raises(ValueError, match="CPU kernel"):
        cspdarknet53.select_bn_impl("kernel", "gpu")
    assert cspdarknet53.select_bn_impl("auto", "gpu") == "moments"  # the original's ops on accelerators
    assert cspdarknet53.select_bn_impl("auto", "npu") == "moments"
    # on CPU auto is what a timed step of the network measured fastest on this host, the kernel among the
    # candidates (this machine and CI have g++)
    assert cspdarknet53.select_bn_impl("auto", "cpu", "matmul") == cputune.decisions()["bn_impl"].choice
    assert set(cputune.decisions()["bn_impl"].seconds) == {"moments", "fused", "kernel"}


# Intel and AMD server targets, compiled whatever the host is, so that a machine of one vendor catches a
# build failure of the other's (an AVX512-FP16 Intel host once failed here while AMD hosts passed). g++ 12.2
# does not know znver4 yet: there it is znver3 plus the AVX-512 subsets Zen 4 adds.
ZEN4_AVX512 = ["-mavx512f", "-mavx512cd", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mavx512ifma", "-mavx512vbmi",
               "-mavx512vbmi2", "-mavx512vnni", "-mavx512bitalg", "-mavx512vpopcntdq", "-mavx512bf16"]
TARGETS = {"sapphirerapids": ("sapphirerapids", []), "icelake-server": ("icelake-server", []),
           "skylake-avx512": ("skylake-avx512", []), "znver3": ("znver3", []), "znver4": ("znver3", ZEN4_AVX512),
           "x86-64-v3": ("x86-64-v3", []), "x86-64-v4": ("x86-64-v4", [])}


def test_kernel_compiles_for_intel_and_amd_targets(tmp_path):
    cxx = os.environ.get("CXX", "g++")
    if kernels._compiler_accepts(cxx, "-march=znver4"):
        TARGETS["znver4"] = ("znver4", [])

    def compile_for(item):
        name, (march, extra) = item
        cmd = kernels.build_command(cxx, tmp_path / f"{name}.o", march, shared=False) + extra
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        errors = [line for line in proc.stderr.splitlines() if "error" in line]
        return name, proc.returncode, (errors or proc.stderr.strip().splitlines() or [""])[0]

    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        results = list(pool.map(compile_for, TARGETS.items()))
    failed = {name: line for name, rc, line in results if rc != 0}
    assert not failed, f"bn_mish.cc does not compile for: {failed}"
    assert all((tmp_path / f"{name}.o").stat().st_size > 0 for name in TARGETS)


def test_a_failing_host_build_falls_back_to_the_default_target(tmp_path):
    # an -march the compiler rejects stands for any host-specific build failure
    cache = {"MODELZOO_KERNEL_CACHE": str(tmp_path / "kernels"), "MODELZOO_KERNEL_MARCH": "no-such-cpu"}
    out, err, rc = _loader("kernel", cache)
    assert rc == 0 and "impl kernel" in out, err[-2000:]
    lines = [line for line in err.splitlines() if "-march=no-such-cpu build failed" in line]
    assert len(lines) == 1 and "built for the compiler's default target instead" in lines[0], err[-2000:]
    assert len(list((tmp_path / "kernels").glob("*.so"))) == 1
