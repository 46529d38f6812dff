#!/usr/bin/env bash
# Full CSPNet (CSPDarknet53) CIFAR-10 training on one device: 50 epochs, batch 64 unless overridden.
# bash test/train_full_1p.sh --data_path=<cifar-10-batches-py or a parent> [--output_path= --train_epochs=
#      --batch_size= --train_steps= --device=auto|cpu|gpu|npu] [train.py flags such as --seed=1 --augment]
cur_path=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export MZ_RECIPE_DIR=$(dirname "$cur_path")
source "$MZ_RECIPE_DIR/../common/sh/env.sh" tf || exit 2
mz_parse_test_args "$@"; rc=$?
[ $rc = 3 ] && { sed -n 2,4p "${BASH_SOURCE[0]}"; exit 0; }
[ $rc = 0 ] || exit 2
perf_flag=; [ "${CSPNET_RUN_KIND:-}" = perf ] && perf_flag=--perf
# the performance run is the original's 5 epochs, the full run its 50
default_epochs=50; [ -n "$perf_flag" ] && default_epochs=5
cd "$MZ_RECIPE_DIR"
mz_run_logged "$output_path/train_${ASCEND_DEVICE_ID:-0}.log" "$MZ_PYTHON" train.py \
  --data_path="$data_path" --output_path="$output_path" --epochs="${train_epochs:-$default_epochs}" \
  --batch_size="${batch_size:-64}" --device="$device" ${train_steps:+--train_steps=$train_steps} \
  $perf_flag "${MZ_EXTRA_ARGS[@]}" || exit $?
