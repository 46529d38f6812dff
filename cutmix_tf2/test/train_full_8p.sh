#!/usr/bin/env bash
# Full multi-device training (15 epochs, static shapes) on the devices of a rank table (train_performance_8p.sh
# is this run with 2 epochs, dynamic shapes and --perf).
# One worker per device listed for this server (TF MultiWorkerMirroredStrategy; TF_CONFIG per worker).
# usage: bash test/train_full_8p.sh --data_path=... --rank_table=rank_table.json [--server_index=auto|N]
#        [--device_num=N] [--port=29600] [--output_path=] [--train_epochs=] [--batch_size= (per device)]
#        [--train_steps=] [--device=auto|cpu|gpu|npu] [train.py flags]
cur_path=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export MZ_RECIPE_DIR=$(dirname "$cur_path")
source "$MZ_RECIPE_DIR/../common/sh/env.sh" tf || exit 2
mz_parse_test_args "$@" || exit 2
mz_split_launch_args || exit 2
cd "$MZ_RECIPE_DIR"
"$MZ_PYTHON" -m src.launch --output_path="$output_path" --device="$device" "${launch_args[@]}" -- \
  --data_dir="$data_path" --epochs="${train_epochs:-15}" ${batch_size:+--batch_size="$batch_size"} \
  --eval_static=True ${train_steps:+--train_steps="$train_steps"} "${train_args[@]}" || exit $?
