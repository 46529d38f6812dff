"""test/env_npu.sh: sourced by every test/*.sh when a CANN stack is installed, and only then.

No CANN here, so a fake install root (MZ_ASCEND_ROOT, the variable test/env_npu.sh documents) holds a set_env.sh
that marks the environment, and a stand-in interpreter (MZ_PYTHON) records the environment and command line the
script would start training with instead of training. That is the whole effect of env_npu.sh: the variables the
training process inherits.
"""
from __future__ import annotations

import os
import subprocess

import pytest

from conftest import RECIPE, env

SCRIPTS = sorted(p.name for p in (RECIPE / "test").glob("train_*.sh"))
NPU_VARS = {"ASCEND_SLOG_PRINT_TO_STDOUT": "0", "ASCEND_GLOBAL_LOG_LEVEL": "3", "TASK_QUEUE_ENABLE": "1",
            "HCCL_WHITELIST_DISABLE": "1"}


@pytest.fixture()
def stand_in(tmp_path):
    py = tmp_path / "python"
    # env.sh probes the interpreter with `-c <import check>`: answer yes; any other call is the training command
    py.write_text('#!/usr/bin/env bash\nif [ "$1" = "-c" ]; then exit 0; fi\n'
                  'env > "$R50_STANDIN_OUT.env"; printf "%s\\n" "$@" > "$R50_STANDIN_OUT.args"\n')
    py.chmod(0o755)
    return py


def _fake_root(tmp_path, package="ascend-toolkit"):
    root = tmp_path / "Ascend"
    (root / package).mkdir(parents=True)
    (root / package / "set_env.sh").write_text(f"export FAKE_CANN_SET_ENV={package}\n")
    return root


def _run(script, tmp_path, stand_in, digits, **extra_env):
    e = env()
    for k in [*NPU_VARS, "FAKE_CANN_SET_ENV", "etp_running_flag", "MZ_ASCEND_ROOT"]:
        e.pop(k, None)
    e.update(MZ_PYTHON=str(stand_in), R50_STANDIN_OUT=str(tmp_path / script), **extra_env)
    r = subprocess.run(["bash", str(RECIPE / "test" / script), f"--data_path={digits}",
                        f"--output_path={tmp_path / 'out'}", "--device=cpu"],
                       env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    assert r.returncode == 0, r.stdout
    seen = dict(line.split("=", 1) for line in (tmp_path / f"{script}.env").read_text().splitlines() if "=" in line)
    return seen, (tmp_path / f"{script}.args").read_text(), r.stdout


def test_the_twelve_scripts_are_covered():
    assert len(SCRIPTS) == 12 and (RECIPE / "test" / "env_npu.sh").is_file()


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_source_env_npu_only_when_cann_is_installed(script, tmp_path, stand_in, digits):
    # no CANN (the root holds no set_env.sh): nothing of env_npu.sh reaches the training process
    none_seen, none_args, none_out = _run(script, tmp_path, stand_in, digits, MZ_ASCEND_ROOT=str(tmp_path / "none"))
    assert not set(NPU_VARS) & set(none_seen) and "FAKE_CANN_SET_ENV" not in none_seen
    assert "env_npu.sh" not in none_out
    # a CANN root: its set_env.sh is sourced and the original's variables are set; the command is unchanged
    root = _fake_root(tmp_path)
    seen, args, out = _run(script, tmp_path, stand_in, digits, MZ_ASCEND_ROOT=str(root))
    assert seen["FAKE_CANN_SET_ENV"] == "ascend-toolkit"
    assert {k: seen.get(k) for k in NPU_VARS} == NPU_VARS
    assert f"env_npu.sh: CANN environment from {root}" in out
    assert args == none_args


def test_nnae_root_and_the_platform_switch(tmp_path, stand_in, digits):
    root = _fake_root(tmp_path, "nnae")  # runtime-only package: its set_env.sh, as the original's fallback
    seen, _, _ = _run("train_full_1p.sh", tmp_path, stand_in, digits, MZ_ASCEND_ROOT=str(root))
    assert seen["FAKE_CANN_SET_ENV"] == "nnae" and seen["TASK_QUEUE_ENABLE"] == "1"
    # etp_running_flag=true (the original's platform runs): the platform set the environment, not sourced
    seen, _, _ = _run("train_full_1p.sh", tmp_path, stand_in, digits, MZ_ASCEND_ROOT=str(root),
                      etp_running_flag="true")
    assert "FAKE_CANN_SET_ENV" not in seen and not set(NPU_VARS) & set(seen)
    assert os.environ.get("FAKE_CANN_SET_ENV") is None  # nothing leaked into this process
