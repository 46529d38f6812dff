#!/usr/bin/env bash
# Data-parallel GPU training on this machine, as the original (which used mpirun -n 8):
#   bash run_distribution_gpu.sh TRAIN_PATH EVAL_PATH TRAIN_MODEL [train.py flags]
# DEVICE_NUM (default 8) devices; a one-server rank table is written for them and run through msrun.
if [ $# -lt 3 ]; then
  echo "Usage: DEVICE_NUM=8 bash $0 TRAIN_PATH EVAL_PATH TRAIN_MODEL [train.py flags]" >&2; exit 2
fi
n=${DEVICE_NUM:-8}
[[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "ERROR: DEVICE_NUM must be a positive integer, got '$n'" >&2; exit 2; }
table=$(mktemp "${TMPDIR:-/tmp}/rank_table_XXXXXX.json")
trap 'rm -f "$table"' EXIT
{
  printf '{"version": "1.0", "server_count": "1", "status": "completed", "server_list": [{"server_id": "127.0.0.1", "host_nic_ip": "reserve", "device": ['
  for ((i = 0; i < n; i++)); do
    [ $i -gt 0 ] && printf ', '
    printf '{"device_id": "%d", "device_ip": "0.0.0.0", "rank_id": "%d"}' "$i" "$i"
  done
  printf ']}]}\n'
} > "$table"
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/distribute_common.sh" "$table" "$@" --device=gpu
