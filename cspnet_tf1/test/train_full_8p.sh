#!/usr/bin/env bash
# Full CSPNet training on the devices of an HCCL rank table: 50 epochs, batch 64 per device unless overridden.
# One train.py per device listed for this server (TF collective all-reduce, or HCCL on Ascend); see launch.py.
# bash test/train_full_8p.sh --data_path=<cifar-10-batches-py or a parent> --rank_table=<rank_table.json>
#      [--server_index=auto|N] [--device_num=N] [--port=29700] [--output_path=] [--train_epochs=]
#      [--batch_size= (per device)] [--train_steps=<at most N steps per epoch>] [--device=auto|cpu|gpu|npu]
#      [train.py flags such as --seed=1 --perf]
# test/train_performance_8p.sh is this run with --perf and 5 epochs (the original's performance run).
cur_path=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export MZ_RECIPE_DIR=$(dirname "$cur_path")
source "$MZ_RECIPE_DIR/../common/sh/env.sh" tf || exit 2
mz_parse_test_args "$@" || exit 2
mz_split_launch_args || exit 2
cd "$MZ_RECIPE_DIR"
"$MZ_PYTHON" launch.py --output_path="$output_path" --device="$device" "${launch_args[@]}" -- \
  --data_path="$data_path" --epochs="${train_epochs:-50}" --batch_size="${batch_size:-64}" \
  ${train_steps:+--train_steps=$train_steps} "${train_args[@]}" || exit $?
