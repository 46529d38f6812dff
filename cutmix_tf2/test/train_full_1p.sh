#!/usr/bin/env bash
# Full 1-device training as the original: 15 epochs, static shapes, CaseName *_acc (the train_performance_1p*.sh
# scripts are this run with fewer epochs and --perf).
# usage: bash test/train_full_1p.sh --data_path=<cifar-10-batches-py or parent> [--output_path=] [--train_epochs=]
#        [--batch_size=] [--train_steps=] [--device=auto|cpu|gpu|npu] [any train.py flag, e.g. --precision_mode=...]
cur_path=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export MZ_RECIPE_DIR=$(dirname "$cur_path")
source "$MZ_RECIPE_DIR/../common/sh/env.sh" tf || exit 2
mz_parse_test_args "$@" || exit 2
cd "$MZ_RECIPE_DIR"
mz_run_logged "$output_path/train_${ASCEND_DEVICE_ID:-0}.log" "$MZ_PYTHON" train.py --data_dir="$data_path" \
  --output_path="$output_path" --epochs="${train_epochs:-15}" ${batch_size:+--batch_size="$batch_size"} \
  --eval_static=True --device="$device" ${train_steps:+--train_steps="$train_steps"} "${MZ_EXTRA_ARGS[@]}" || exit $?
