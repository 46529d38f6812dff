"""Tiny-DarkNet recipe for MindSpore (mirrors mindspore-ai/models research/cv/tinydarknet)."""

# MindSpore's CPU convolutions reach oneDNN in plain NCHW layout, which on AVX-512 CPUs runs them through
# oneDNN's scalar reference kernel (~1 GFLOP/s): cap oneDNN at AVX2 before any of them runs (common/onednn.py).
# Done here, at the package's import, so that train.py, eval.py, export.py, the tests and the bench all get it.
from common.onednn import cap_isa_for_plain_layout_convs

cap_isa_for_plain_layout_convs()
