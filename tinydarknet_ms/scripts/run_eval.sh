#!/usr/bin/env bash
# bash scripts/run_eval.sh VAL_DATA_DIR [cifar10|imagenet] CHECKPOINT [--<key>=<value> ...]
# As the original: evaluates in ./eval (log: ./eval/eval.log); runs in the foreground.
if [ $# -lt 2 ]; then
  echo "Usage: bash $0 VAL_DATA_DIR [imagenet] CHECKPOINT [--<key>=<value> ...]" >&2; exit 2
fi
recipe=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$recipe/../common/sh/env.sh" mindspore || exit 2
data_dir=$1; shift
dataset=imagenet
case "${1:-}" in cifar10|imagenet) dataset=$1; shift ;; esac
ckpt=${1:?CHECKPOINT is required}; shift
[ -d "$data_dir" ] || { echo "ERROR: $data_dir: VAL_DATA_DIR is not a directory" >&2; exit 2; }
[ -f "$ckpt" ] || { echo "ERROR: $ckpt: checkpoint not found" >&2; exit 2; }
[ "$dataset" = imagenet ] || { echo "ERROR: dataset '$dataset' is not supported by this rebuild (imagenet only)" >&2; exit 2; }
work=$PWD/eval
mkdir -p "$work"
"$MZ_PYTHON" "$recipe/eval.py" --config_path="$recipe/config/${dataset}_config.yaml" \
  --val_data_dir="$(cd "$data_dir" && pwd)" --checkpoint_path="$(cd "$(dirname "$ckpt")" && pwd)/$(basename "$ckpt")" \
  "$@" 2>&1 | tee "$work/eval.log"
exit "${PIPESTATUS[0]}"
