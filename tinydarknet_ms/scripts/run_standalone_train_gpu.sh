#!/usr/bin/env bash
# bash scripts/run_standalone_train_gpu.sh DEVICE_ID TRAIN_DATA_DIR [imagenet] [--<key>=<value> ...]
# The original's GPU entry: run_standalone_train.sh on GPU (same folder ./train_single, same log). The original
# read config/imagenet_config_gpu.yaml, which differs from imagenet_config.yaml only in its device keys.
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/common/sh/ms_launch.sh" "$@" || exit 2
source "$MZ_ROOT/tinydarknet_ms/scripts/run_standalone_train.sh" "$@" --device_target=GPU
