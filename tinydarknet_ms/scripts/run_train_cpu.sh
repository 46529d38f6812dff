#!/usr/bin/env bash
# bash scripts/run_train_cpu.sh TRAIN_DATA_DIR [imagenet] [--<key>=<value> ...]
# The original's CPU training: run_standalone_train.sh on CPU with device id 0 (a CPU has no device to pick),
# in ./train_single with its log.
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/common/sh/ms_launch.sh" "$@" || exit 2
source "$MZ_ROOT/tinydarknet_ms/scripts/run_standalone_train.sh" 0 "$@" --device_target=CPU
