#!/usr/bin/env bash
# bash scripts/run_eval_cpu.sh VAL_DATA_DIR [imagenet] CHECKPOINT [--<key>=<value> ...]
# The original's CPU evaluation: run_eval.sh on CPU (same folder ./eval, same log).
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/common/sh/ms_launch.sh" "$@" || exit 2
source "$MZ_ROOT/tinydarknet_ms/scripts/run_eval.sh" "$@" --device_target=CPU
