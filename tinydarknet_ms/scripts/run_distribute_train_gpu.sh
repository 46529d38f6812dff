#!/usr/bin/env bash
# bash scripts/run_distribute_train_gpu.sh RANK_SIZE TRAIN_DATA_DIR [imagenet] [launcher flags] [--<key>=<value> ...]
# The original's GPU data-parallel entry (it ran mpirun -n RANK_SIZE): a one-server rank table of RANK_SIZE
# devices is written, then the job runs as run_distribute_train.sh TABLE imagenet TRAIN_DATA_DIR on GPU
# (msrun; the same launcher flags, environment, folders and logs; a --device_target given here wins).
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/common/sh/ms_launch.sh" "$@" || exit 2
ms_positional 2 "RANK_SIZE TRAIN_DATA_DIR [imagenet]" "$@"
n=$1 data_dir=$2; shift 2
[[ "$n" =~ ^[1-9][0-9]*$ ]] || ms_fail "RANK_SIZE must be a positive integer, got '$n'"
dataset=imagenet
case "$1" in cifar10|imagenet) dataset=$1; shift ;; esac
table=$(mktemp "${TMPDIR:-/tmp}/rank_table_XXXXXX.json") || ms_fail "cannot create a temporary rank table"
trap 'rm -f "$table"' EXIT
"$MZ_PYTHON" -c 'import sys; from common.rank_table import write_rank_table; write_rank_table(sys.argv[1], int(sys.argv[2]))' \
  "$table" "$n" || ms_fail "$table: cannot write the rank table"
source "$MZ_ROOT/tinydarknet_ms/scripts/run_distribute_train.sh" "$table" "$dataset" "$data_dir" --device_target=GPU "$@"
