#!/usr/bin/env bash
# bash scripts/run_eval.sh VAL_DATA_DIR [cifar10|imagenet] CHECKPOINT [--<key>=<value> ...]
# As the original: evaluates in ./eval (log: ./eval/eval.log); runs in the foreground.
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/common/sh/ms_launch.sh" "$@" || exit 2
recipe=$MZ_ROOT/tinydarknet_ms
ms_positional 2 "VAL_DATA_DIR [imagenet] CHECKPOINT" "$@"
data_dir=$1; shift
dataset=imagenet
case "$1" in cifar10|imagenet) dataset=$1; shift ;; esac
ms_positional 1 "VAL_DATA_DIR [imagenet] CHECKPOINT" "$@"
ckpt=$1; shift
[ -d "$data_dir" ] || ms_fail "$data_dir: VAL_DATA_DIR is not a directory"
[ -f "$ckpt" ] || ms_fail "$ckpt: checkpoint not found"
[ "$dataset" = imagenet ] || ms_fail "dataset '$dataset' is not supported by this rebuild (imagenet only)"
mz_run_logged "$PWD/eval/eval.log" "$MZ_PYTHON" "$recipe/eval.py" --config_path="$recipe/config/${dataset}_config.yaml" \
  --val_data_dir="$(cd "$data_dir" && pwd)" --checkpoint_path="$(realpath "$ckpt")" "$@"
