#!/usr/bin/env bash
# Data-parallel training from an HCCL rank table, as the original:
#   bash run_distribution_ascend.sh RANK_TABLE_FILE TRAIN_PATH EVAL_PATH TRAIN_MODEL [--device=auto|npu|gpu|cpu]
#        [--server_index=auto|N] [--master_port=N] [train.py flags]
# On Ascend: one process per device listed for this server, each in ./<model>_train_parallel<i>/ with its log.
# Elsewhere the same table drives msrun (MindSpore's launcher): NCCL on GPU, MindSpore's CPU collectives on CPU.
if [ $# -lt 4 ]; then
  echo "Usage: bash $0 RANK_TABLE_FILE TRAIN_PATH EVAL_PATH TRAIN_MODEL [--device=..] [--server_index=..] [flags]" >&2
  exit 2
fi
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/distribute_common.sh" "$@"
