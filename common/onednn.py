"""oneDNN's ISA level for frameworks that give it convolutions in plain NCHW layout, chosen by a probe.

MindSpore 2.10's CPU Conv2D (and its gradients) hand oneDNN 3.10 plain NCHW tensors. On CPUs with AVX-512
(a 2-core AMD EPYC and, per a user's report, an Intel Xeon with AMX), oneDNN dispatches those to
``jit_uni_ncsp:conv+ref:any``, whose inner convolution is the scalar reference kernel (~1 GFLOP/s); capped
at AVX2 it picks ``gemm:jit`` (im2col + its FMA GEMM): 6.7 s against 57 ms for a 3x3 convolution 128 -> 256
on 16 x 28 x 28 on that EPYC. Which level is fastest is a property of the host and the oneDNN build, not of
a vendor or a flag, so ``choose_isa_for_plain_layout_convs`` times a convolution step (forward and both
gradients, in a child process per level: oneDNN reads the variable once, at its first primitive) under
oneDNN's own choice and under the AVX2 cap, and sets the cap only where it wins (common/cputune.py: cached
per host, recorded in the ``cpu tuning:`` line and the run record). A variable the user set is kept.

Why AVX-512 cannot win here (``ONEDNN_VERBOSE=dispatch`` on a 2-core Intel Xeon with AVX-512/AMX, 2026-12-02):
MindSpore creates every convolution with fixed plain tags for the weights too (``abcd``), never ``any``. The
AVX-512 direct and brgemm kernels need blocked weights ("unsupported format tag", jit_brgemm_conv_utils.cpp);
``jit_uni_ncsp`` accepts the plain layout by reordering the activations to channels-last, but its inner
convolution still gets the plain weights, every fast kernel refuses them, and it settles on ``ref:any``. At
every AVX-512 level a 3x3 128 -> 256 convolution step on 16 x 28 x 28 took 6.7 s against 0.096 s capped at
AVX2, where ``gemm:jit`` (im2col + FMA GEMM) takes plain tensors. MindSpore's MatMul is not affected (the
uncapped ``brg_matmul:avx512_core`` ran 1024^3 at 297 GFLOP/s against 156 under the cap), but the cap is per
process, and the convolutions are most of these networks' time. MindSpore 2.10 refuses NHWC Conv2d on CPU.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from common import cputune

ISA_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
CANDIDATES = ("ALL", "AVX2")  # ALL: oneDNN's own choice (no cap)
TIMED_PROBE = Path(__file__).with_name("onednn_probe.py")


def _measure_mindspore_conv(isa: str) -> float:
    return cputune.run_probe_child([str(TIMED_PROBE)], {"ONEDNN_MAX_CPU_ISA": isa}, timeout=300)


def choose_isa_for_plain_layout_convs(environ=None, measure=_measure_mindspore_conv) -> cputune.Decision:
    """Decide oneDNN's ISA level for MindSpore's convolutions on this host; set ONEDNN_MAX_CPU_ISA if capped."""
    env = os.environ if environ is None else environ
    for name in ISA_VARIABLES:
        if name in env:
            return cputune.record("onednn_isa", env[name], "user", note=f"${name}")
    decision = cputune.probe("onednn_isa", CANDIDATES, measure, default="ALL",
                             key=f"mindspore {cputune.package_version('mindspore')}; {TIMED_PROBE.name} v1")
    if decision.choice != "ALL":
        env["ONEDNN_MAX_CPU_ISA"] = decision.choice
    return decision


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
