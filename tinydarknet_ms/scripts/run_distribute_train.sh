#!/usr/bin/env bash
# bash scripts/run_distribute_train.sh RANK_TABLE_FILE [cifar10|imagenet] TRAIN_DATA_DIR [launcher flags] [--<key>=<value> ...]
#
# Data-parallel training on every device of the HCCL rank table, as the original; the table is checked before
# anything starts. Launcher flags (each also an environment variable; a flag wins):
#   --device_target=auto|Ascend|GPU|CPU (or --device=auto|npu|gpu|cpu)      default auto
#   --server_index=auto|N      SERVER_INDEX      this server in the table (auto: the one with a local address)
#   --master_port=N            MASTER_PORT       msrun's scheduler port (default 8118)
#   --cluster_time_out=S       CLUSTER_TIME_OUT  seconds ranks wait for each other at start-up (default 300)
# Ascend: one process per device of this server in ./train_parallel<rank>/ (env.log, log) with RANK_TABLE_FILE,
#   RANK_SIZE, RANK_ID, DEVICE_ID. Elsewhere: msrun on rank 0's server (the others' workers join it), logs in
#   <output_path>/msrun_logs/worker_<rank>.log. The first rank of this server is echoed on the console; if a
#   rank fails the others are stopped and the script exits non-zero. Details: common/sh/ms_launch.sh.
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/common/sh/ms_launch.sh" "$@" || exit 2
recipe=$MZ_ROOT/tinydarknet_ms
ms_take_flags "$@"
set -- "${MZ_ARGS[@]}"
ms_positional 2 "RANK_TABLE_FILE [imagenet] TRAIN_DATA_DIR" "$@"
table=$1; shift
dataset=imagenet
case "$1" in cifar10|imagenet) dataset=$1; shift ;; esac
ms_positional 1 "RANK_TABLE_FILE [imagenet] TRAIN_DATA_DIR" "$@"
data_dir=$1; shift
[ -d "$data_dir" ] || ms_fail "$data_dir: TRAIN_DATA_DIR is not a directory"
[ "$dataset" = imagenet ] || ms_fail "dataset '$dataset' is not supported by this rebuild (imagenet only)"
output_path=$PWD flags=()
for a in "$@"; do   # every rank gets the absolute output path (the Ascend ranks run in their own folders)
  case "$a" in --output_path=*) output_path=${a#*=} ;; *) flags+=("$a") ;; esac
done
ms_read_table "$table"
ms_resolve_target
mkdir -p "$output_path" && output_path=$(cd "$output_path" && pwd) || ms_fail "$output_path: cannot create it"
ms_launch "$PWD" "$output_path/msrun_logs" "$recipe/train.py" --config_path="$recipe/config/${dataset}_config.yaml" \
  --dataset_name="$dataset" --data_path="$(cd "$data_dir" && pwd)" --output_path="$output_path" "${flags[@]}"
