#!/usr/bin/env bash
# bash scripts/run_standalone_train.sh DEVICE_ID TRAIN_DATA_DIR [cifar10|imagenet] [--<key>=<value> ...]
# As the original: trains in ./train_single (log: ./train_single/train.log); runs in the foreground.
if [ $# -lt 2 ]; then
  echo "Usage: bash $0 DEVICE_ID TRAIN_DATA_DIR [imagenet] [--<key>=<value> ...]" >&2; exit 2
fi
recipe=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$recipe/../common/sh/env.sh" mindspore || exit 2
device_id=$1 data_dir=$2; shift 2
dataset=imagenet
case "${1:-}" in cifar10|imagenet) dataset=$1; shift ;; esac
[[ "$device_id" =~ ^[0-9]+$ ]] || { echo "ERROR: DEVICE_ID must be an integer, got '$device_id'" >&2; exit 2; }
[ -d "$data_dir" ] || { echo "ERROR: $data_dir: TRAIN_DATA_DIR is not a directory" >&2; exit 2; }
[ "$dataset" = imagenet ] || { echo "ERROR: dataset '$dataset' is not supported by this rebuild (imagenet only)" >&2; exit 2; }
export DEVICE_ID=$device_id RANK_ID=0 DEVICE_NUM=1 RANK_SIZE=1
work=$PWD/train_single
mkdir -p "$work"
"$MZ_PYTHON" "$recipe/train.py" --config_path="$recipe/config/${dataset}_config.yaml" --dataset_name="$dataset" \
  --train_data_dir="$(cd "$data_dir" && pwd)" --output_path="$work" "$@" 2>&1 | tee "$work/train.log"
exit "${PIPESTATUS[0]}"
