#!/usr/bin/env bash
# Full CSPNet (CSPDarknet53) CIFAR-10 training on one device: 50 epochs, batch 64 unless overridden.
# bash test/train_full_1p.sh --data_path=<cifar-10-batches-py or a parent> [--output_path= --train_epochs=
#      --batch_size= --train_steps=<at most N steps per epoch> --device=auto|cpu|gpu|npu]
#      [train.py flags such as --seed=1 --augment --perf]
# test/train_performance_1p.sh is this run with --perf and 5 epochs (the original's performance run).
cur_path=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export MZ_RECIPE_DIR=$(dirname "$cur_path")
source "$MZ_RECIPE_DIR/../common/sh/env.sh" tf || exit 2
mz_parse_test_args "$@" || exit 2
cd "$MZ_RECIPE_DIR"
mz_run_logged "$output_path/train_${ASCEND_DEVICE_ID:-0}.log" "$MZ_PYTHON" train.py \
  --data_path="$data_path" --output_path="$output_path" --epochs="${train_epochs:-50}" \
  --batch_size="${batch_size:-64}" --device="$device" ${train_steps:+--train_steps=$train_steps} \
  "${MZ_EXTRA_ARGS[@]}" || exit $?
