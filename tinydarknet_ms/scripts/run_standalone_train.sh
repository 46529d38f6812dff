#!/usr/bin/env bash
# bash scripts/run_standalone_train.sh DEVICE_ID TRAIN_DATA_DIR [cifar10|imagenet] [--<key>=<value> ...]
# As the original: trains in ./train_single (log: ./train_single/train.log); runs in the foreground.
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/common/sh/ms_launch.sh" "$@" || exit 2
recipe=$MZ_ROOT/tinydarknet_ms
ms_positional 2 "DEVICE_ID TRAIN_DATA_DIR [imagenet]" "$@"
device_id=$1 data_dir=$2; shift 2
dataset=imagenet
case "$1" in cifar10|imagenet) dataset=$1; shift ;; esac
[[ "$device_id" =~ ^[0-9]+$ ]] || ms_fail "DEVICE_ID must be an integer, got '$device_id'"
[ -d "$data_dir" ] || ms_fail "$data_dir: TRAIN_DATA_DIR is not a directory"
[ "$dataset" = imagenet ] || ms_fail "dataset '$dataset' is not supported by this rebuild (imagenet only)"
export DEVICE_ID=$device_id RANK_ID=0 DEVICE_NUM=1 RANK_SIZE=1
work=$PWD/train_single
mz_run_logged "$work/train.log" "$MZ_PYTHON" "$recipe/train.py" --config_path="$recipe/config/${dataset}_config.yaml" \
  --dataset_name="$dataset" --train_data_dir="$(cd "$data_dir" && pwd)" --output_path="$work" "$@"
