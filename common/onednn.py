"""Cap oneDNN at AVX2 on AVX-512 CPUs, for frameworks that give it convolutions in plain NCHW layout.

MindSpore 2.10's CPU Conv2D (and its gradients) hand oneDNN 3.10 plain NCHW tensors. On a CPU with
AVX-512, oneDNN dispatches those to ``jit_uni_ncsp:conv+ref:any``, whose inner convolution is the scalar
reference kernel: 3x3 convolutions run at about 1 GFLOP/s. With the ISA capped at AVX2 it picks
``gemm:jit`` (im2col + its FMA GEMM) instead. Measured on a 2-core AMD EPYC with AVX-512, 3x3
convolution 128 -> 256 channels on 16 x 28 x 28: 6.7 s (ref:any) against 57 ms (gemm:jit); the dense
matmul rate is the same either way (184.7 vs 184.8 GFLOP/s). On CPUs without AVX-512 nothing changes.

oneDNN reads the variable when it creates its first primitive, so setting it any time before the first
convolution runs is enough. A variable the user set (``ONEDNN_MAX_CPU_ISA=ALL`` lifts the cap) is kept.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ISA_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
CAP = "AVX2"


def cpu_has_avx512(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> bool:
    """True when the first ``flags`` line of ``cpuinfo`` lists avx512f (x86 Linux); False when unreadable."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return "avx512f" in line.split(":", 1)[-1].split()
    return False


def cap_isa_for_plain_layout_convs(environ=None, cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> str | None:
    """Set ONEDNN_MAX_CPU_ISA=AVX2 when the CPU has AVX-512 and the user chose no ISA; return what was set."""
    env = os.environ if environ is None else environ
    if any(name in env for name in ISA_VARIABLES) or not cpu_has_avx512(cpuinfo):
        return None
    env["ONEDNN_MAX_CPU_ISA"] = CAP
    return CAP


# a MindSpore 3x3 convolution, forward and both gradients, run after the recipe's ``src`` package is imported
# (which applies the cap); a file, because MindSpore's graph mode compiles from source files only
MINDSPORE_CONV_PROBE = """
import numpy as np, mindspore as ms
from mindspore import nn
import src  # noqa: F401
ms.set_context(mode=ms.GRAPH_MODE)
ms.set_device("CPU")


class Probe(nn.Cell):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(16, 32, 3, pad_mode="pad", padding=1, has_bias=False)

    def construct(self, x):
        return self.conv(x).sum()


net = Probe()
x = ms.Tensor(np.random.rand(2, 16, 8, 8).astype(np.float32))
net(x).asnumpy()
ms.grad(net, grad_position=0, weights=net.trainable_params())(x)[0].asnumpy()
"""


def mindspore_conv_implementations(recipe_dir, work_dir, python=sys.executable) -> list:
    """oneDNN's implementation name for each convolution MINDSPORE_CONV_PROBE runs in ``recipe_dir``.

    Run with ONEDNN_VERBOSE=1 and without any ISA variable of the caller's, so the recipe's own choice
    decides; raises RuntimeError (with the end of stderr) if the probe fails. Used by the MindSpore recipes'
    tests to show that no convolution runs on a ``ref`` kernel.
    """
    recipe_dir = Path(recipe_dir)
    probe = Path(work_dir) / "conv_probe.py"
    probe.write_text(MINDSPORE_CONV_PROBE)
    env = {k: v for k, v in os.environ.items() if k not in ISA_VARIABLES}
    env.update(ONEDNN_VERBOSE="1", PYTHONPATH=os.pathsep.join([str(recipe_dir), str(recipe_dir.parent)]))
    proc = subprocess.run([python, str(probe)], cwd=recipe_dir, env=env, capture_output=True, text=True,
                          timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"{probe}: exit {proc.returncode}: {proc.stderr[-2000:]}")
    # onednn_verbose,v1,primitive,exec,cpu,convolution,<implementation>,<propagation>,...
    return [fields[6] for fields in (line.split(",") for line in proc.stdout.splitlines())
            if fields[0] == "onednn_verbose" and fields[3:6] == ["exec", "cpu", "convolution"]]
