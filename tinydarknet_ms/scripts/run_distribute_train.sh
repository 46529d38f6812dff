#!/usr/bin/env bash
# bash scripts/run_distribute_train.sh RANK_TABLE_FILE [cifar10|imagenet] TRAIN_DATA_DIR [--<key>=<value> ...]
#
# Reads the HCCL rank table through common.rank_table (bad tables fail here, before any process starts).
# Ascend (its stack importable, no --device_target other than Ascend): one process per device of this
#   server in ./train_parallel<i>, with RANK_TABLE_FILE / RANK_SIZE / RANK_ID / DEVICE_ID, as the original.
# Elsewhere: msrun (MindSpore's dynamic cluster; NCCL on GPU, its own collectives on CPU) with
#   worker_num = ranks in the table, local_worker_num = this server's devices, master = rank 0's server,
#   node_rank = this server's index. Logs: <output_path>/msrun_logs/worker_<rank>.log. Only rank 0's server
#   runs msrun (and its scheduler); another server's workers join that scheduler directly.
# Environment: SERVER_INDEX (default auto: the server whose server_id is a local address), MASTER_PORT
#   (default 8118), CLUSTER_TIME_OUT (seconds msrun waits for all ranks to join, default 120).
# The job exits non-zero if any rank fails; the remaining ranks are stopped.

# wait_ranks: wait for the processes in pids; the first one that fails stops the others. Returns its status.
wait_ranks() {
  local rc=0 status p alive
  while [ ${#pids[@]} -gt 0 ]; do
    wait -n "${pids[@]}"; status=$?
    alive=(); for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive+=("$p"); done
    if [ $status -ne 0 ]; then rc=$status; kill "${alive[@]}" 2>/dev/null; wait; break; fi
    pids=("${alive[@]}")
  done
  return $rc
}

if [ $# -lt 2 ]; then
  echo "Usage: bash $0 RANK_TABLE_FILE [imagenet] TRAIN_DATA_DIR [--<key>=<value> ...]" >&2; exit 2
fi
recipe=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$recipe/../common/sh/env.sh" mindspore || exit 2
table=$1; shift
dataset=imagenet
case "${1:-}" in cifar10|imagenet) dataset=$1; shift ;; esac
data_dir=${1:?TRAIN_DATA_DIR is required}; shift
[ -d "$data_dir" ] || { echo "ERROR: $data_dir: TRAIN_DATA_DIR is not a directory" >&2; exit 2; }
[ "$dataset" = imagenet ] || { echo "ERROR: dataset '$dataset' is not supported by this rebuild (imagenet only)" >&2; exit 2; }
data_dir=$(cd "$data_dir" && pwd)
assignments=$("$MZ_PYTHON" -m common.rank_table "$table" --server_index "${SERVER_INDEX:-auto}") || exit 2
eval "$assignments"

device_target=auto output_path=$PWD
for a in "$@"; do
  case "$a" in --device_target=*) device_target=${a#*=} ;; --output_path=*) output_path=${a#*=} ;; esac
done
mkdir -p "$output_path" && output_path=$(cd "$output_path" && pwd)
train=("$recipe/train.py" --config_path="$recipe/config/${dataset}_config.yaml" --dataset_name="$dataset"
       --data_path="$data_dir")

if [ "$device_target" = Ascend ] || { [ "$device_target" = auto ] && "$MZ_PYTHON" -c \
     'import importlib.util,sys; sys.exit(0 if importlib.util.find_spec("acl") else 1)'; }; then
  ulimit -u unlimited 2>/dev/null
  export RANK_TABLE_FILE RANK_SIZE DEVICE_NUM=$LOCAL_DEVICE_NUM
  read -r -a dev_ids <<< "$LOCAL_DEVICE_IDS"
  read -r -a rank_ids <<< "$LOCAL_RANK_IDS"
  pids=()
  for i in "${!dev_ids[@]}"; do
    work=$PWD/train_parallel$i
    mkdir -p "$work"
    (cd "$work" && export DEVICE_ID=${dev_ids[$i]} RANK_ID=${rank_ids[$i]} && env > env.log &&
     exec "$MZ_PYTHON" "${train[@]}" --output_path="$output_path" "$@" > log 2>&1) &
    pids+=($!)
  done
  wait_ranks; rc=$?
  [ $rc -eq 0 ] || echo "ERROR: a rank failed (exit $rc); see train_parallel*/log" >&2
  exit $rc
fi

# Elsewhere: MindSpore's dynamic cluster. msrun starts the scheduler when master_addr is one of this host's
# addresses, so only the master server (rank 0's) runs msrun; another server starts its workers itself with the
# environment msrun would give them (MS_ROLE, MS_WORKER_NUM, MS_SCHED_HOST/PORT, MS_NODE_ID, ...). This also
# lets two "servers" share one host (the loopback test), where a second msrun would start a second scheduler.
mkdir -p "$output_path/msrun_logs"
if [ "$SERVER_INDEX" != "$MASTER_INDEX" ]; then
  read -r -a rank_ids <<< "$LOCAL_RANK_IDS"
  pids=()
  for i in "${!rank_ids[@]}"; do
    rank=${rank_ids[$i]}
    MS_ROLE=MS_WORKER MS_WORKER_NUM=$RANK_SIZE MS_SCHED_HOST=$MASTER_ADDR MS_SCHED_PORT=${MASTER_PORT:-8118} \
    MS_TOPO_TIMEOUT=${CLUSTER_TIME_OUT:-120} MS_NODE_ID=$rank RANK_ID=$rank RANK_SIZE=$RANK_SIZE DEVICE_ID=$i \
      "$MZ_PYTHON" "${train[@]}" --output_path="$output_path" "$@" > "$output_path/msrun_logs/worker_$rank.log" 2>&1 &
    pids+=($!)
  done
  wait_ranks; rc=$?
  [ $rc -eq 0 ] || echo "ERROR: distributed job failed on server $SERVER_INDEX (exit $rc); see $output_path/msrun_logs/worker_*.log" >&2
  exit $rc
fi

# the master server: msrun, which starts `python`: make it this environment's
PATH=$(dirname "$MZ_PYTHON"):$PATH
msrun --worker_num="$RANK_SIZE" --local_worker_num="$LOCAL_DEVICE_NUM" --master_addr="$MASTER_ADDR" \
  --master_port="${MASTER_PORT:-8118}" --node_rank="$SERVER_INDEX" --log_dir="$output_path/msrun_logs" \
  --join=True --cluster_time_out="${CLUSTER_TIME_OUT:-120}" --tail_worker_log=0 \
  "${train[@]}" --output_path="$output_path" "$@"
rc=$?
[ $rc -eq 0 ] || echo "ERROR: distributed job failed (exit $rc); see $output_path/msrun_logs/worker_*.log" >&2
exit $rc
