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
