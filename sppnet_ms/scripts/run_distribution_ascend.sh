#!/usr/bin/env bash
# Data-parallel training from an HCCL rank table, as the original:
#   bash run_distribution_ascend.sh RANK_TABLE_FILE TRAIN_PATH EVAL_PATH TRAIN_MODEL [launcher flags] [train.py flags]
# The table is checked before anything starts. Launcher flags (each also an environment variable; a flag wins):
#   --device=auto|npu|gpu|cpu (or --device_target=auto|Ascend|GPU|CPU)      default auto
#   --server_index=auto|N      SERVER_INDEX      this server in the table (auto: the one with a local address)
#   --master_port=N            MASTER_PORT       msrun's scheduler port (default 8118)
#   --cluster_time_out=S       CLUSTER_TIME_OUT  seconds ranks wait for each other at start-up (default 300)
# Works in ./<TRAIN_MODEL>_train_parallel/ (checkpoints in ckpt/, the run records beside it). Ascend: one process
# per device of this server with RANK_TABLE_FILE, RANK_SIZE, RANK_ID, DEVICE_ID, in train_parallel<rank>/ (env.log,
# log). Elsewhere: msrun on rank 0's server (the others' workers join it), logs in msrun_log/worker_<rank>.log,
# copied without MindSpore's INFO/WARNING lines to train_parallel<rank>/log. The first rank of this server is
# echoed on the console; if a rank fails the others are stopped and the script exits non-zero.
# Details: common/sh/ms_launch.sh.
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/common/sh/ms_launch.sh" "$@" || exit 2
recipe=$MZ_ROOT/sppnet_ms
ms_take_flags "$@"
set -- "${MZ_ARGS[@]}"
ms_positional 4 "RANK_TABLE_FILE TRAIN_PATH EVAL_PATH TRAIN_MODEL" "$@"
table=$1 train_path=$2 eval_path=$3 model=$4; shift 4
case "$model" in zfnet|sppnet_single|sppnet_mult) ;; *) ms_fail "TRAIN_MODEL must be zfnet, sppnet_single or sppnet_mult, got '$model'" ;; esac
for p in "$train_path" "$eval_path"; do [ -e "$p" ] || ms_fail "$p: does not exist"; done
ms_read_table "$table"
ms_resolve_target
work=$PWD/${model}_train_parallel
ms_launch "$work" "$work/msrun_log" "$recipe/train.py" --is_distributed=1 --device_num="$RANK_SIZE" \
  --train_model="$model" --train_path="$(realpath "$train_path")" --eval_path="$(realpath "$eval_path")" \
  --ckpt_path="$work/ckpt" --output_path="$work" "$@"
rc=$?
ms_rank_logs "$work" "$work/msrun_log"
exit $rc
