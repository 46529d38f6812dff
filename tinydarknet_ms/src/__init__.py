"""Tiny-DarkNet recipe for MindSpore (mirrors mindspore-ai/models research/cv/tinydarknet)."""

# MindSpore's CPU convolutions reach oneDNN in plain NCHW layout, which on some AVX-512 CPUs oneDNN runs on its
# scalar reference kernel (~1 GFLOP/s). A probe times a convolution under oneDNN's own ISA choice and under an
# AVX2 cap, on this host (cached per host), and sets the cap where it wins (common/onednn.py). Done here, at
# the package's import, before any convolution runs, so that train.py, eval.py, export.py, the tests and the
# bench all get it; the decision is printed in the "cpu tuning:" line and kept in the run record.
from common.onednn import choose_isa_for_plain_layout_convs

choose_isa_for_plain_layout_convs()
