"""TensorFlow's oneDNN kernels (TF_ENABLE_ONEDNN_OPTS) on or off, chosen by a probe of the running host.

TensorFlow turns its oneDNN kernels on by default only on some Intel CPUs; on a 2-core AMD EPYC they
doubled the CSPNet step rate (BENCHMARKS.md, before/after rows). Whether they help is a property of the CPU
and the TensorFlow build, so ``choose_tf_onednn_opts`` times a small CIFAR-sized convolutional training
step (tf_onednn_probe.py, in a child process per setting: TensorFlow reads the variable once, at import)
with the kernels on and off, and keeps them on unless off is measurably faster (common/cputune.py: cached
per host, printed in the ``cpu tuning:`` line, written to the run record). Call it before TensorFlow is
imported; a value the user set is kept.
"""
from __future__ import annotations

import os
from pathlib import Path

from common import cputune

VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
TIMED_PROBE = Path(__file__).with_name("tf_onednn_probe.py")


def _measure(value: str) -> float:
    return cputune.run_probe_child([str(TIMED_PROBE)], {VARIABLE: value, "TF_CPP_MIN_LOG_LEVEL": "3"},
                                   timeout=300)


def choose_tf_onednn_opts(environ=None, measure=_measure) -> cputune.Decision:
    env = os.environ if environ is None else environ
    if VARIABLE in env:
        return cputune.record("tf_onednn", env[VARIABLE], "user", note=f"${VARIABLE}")
    # one child per setting: a TensorFlow import is seconds, so each child times several steps itself
    decision = cputune.probe("tf_onednn", ["1", "0"], measure, default="1", rounds=1,
                             key=f"tensorflow {cputune.package_version('tensorflow')}; {TIMED_PROBE.name} v1")
    env[VARIABLE] = decision.choice
    return decision
