#!/usr/bin/env bash
# Data-parallel GPU training on this machine, as the original (which used mpirun -n 8):
#   DEVICE_NUM=8 bash run_distribution_gpu.sh TRAIN_PATH EVAL_PATH TRAIN_MODEL [launcher flags] [train.py flags]
# DEVICE_NUM (default 8) devices: a one-server rank table is written for them, then the job runs as
# run_distribution_ascend.sh TABLE TRAIN_PATH EVAL_PATH TRAIN_MODEL --device=gpu (msrun; same launcher flags,
# environment and folders; a --device given here wins).
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/common/sh/ms_launch.sh" "$@" || exit 2
ms_positional 3 "TRAIN_PATH EVAL_PATH TRAIN_MODEL" "$@"
n=${DEVICE_NUM:-8}
[[ "$n" =~ ^[1-9][0-9]*$ ]] || ms_fail "DEVICE_NUM must be a positive integer, got '$n'"
table=$(mktemp "${TMPDIR:-/tmp}/rank_table_XXXXXX.json") || ms_fail "cannot create a temporary rank table"
trap 'rm -f "$table"' EXIT
"$MZ_PYTHON" -c 'import sys; from common.rank_table import write_rank_table; write_rank_table(sys.argv[1], int(sys.argv[2]))' \
  "$table" "$n" || ms_fail "$table: cannot write the rank table"
source "$MZ_ROOT/sppnet_ms/scripts/run_distribution_ascend.sh" "$table" --device=gpu "$@"
