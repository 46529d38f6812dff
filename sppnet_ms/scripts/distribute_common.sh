# Sourced by run_distribution_*.sh: distribute_common.sh RANK_TABLE TRAIN_PATH EVAL_PATH TRAIN_MODEL [flags]
# The table is parsed once, by common.rank_table (a bad table fails here, before any process starts).
recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$recipe_dir/../common/sh/env.sh" mindspore || exit 2
table=$1 train_path=$2 eval_path=$3 model=$4; shift 4
device=auto server_index=auto master_port=${MASTER_PORT:-8118} extra=()
for a in "$@"; do
  case "$a" in
    --device=*) device=${a#*=} ;;
    --server_index=*) server_index=${a#*=} ;;
    --master_port=*) master_port=${a#*=} ;;
    *) extra+=("$a") ;;
  esac
done
case "$model" in zfnet|sppnet_single|sppnet_mult) ;; *) echo "ERROR: model must be zfnet, sppnet_single or sppnet_mult, got '$model'" >&2; exit 2 ;; esac
for p in "$train_path" "$eval_path"; do [ -e "$p" ] || { echo "ERROR: $p: does not exist" >&2; exit 2; }; done
[ -f "$table" ] || { echo "ERROR: $table: rank table not found" >&2; exit 2; }
table=$(realpath "$table") train_path=$(realpath "$train_path") eval_path=$(realpath "$eval_path")
assignments=$("$MZ_PYTHON" -m common.rank_table "$table" --server_index "$server_index") || exit 2
eval "$assignments"   # RANK_SIZE SERVER_INDEX MASTER_ADDR LOCAL_DEVICE_NUM RANK_START LOCAL_DEVICE_IDS ...
case "$device" in
  npu) target=Ascend ;; gpu) target=GPU ;; cpu) target=CPU ;;
  auto) target=$("$MZ_PYTHON" -c 'import sys; sys.path.insert(0, sys.argv[1]); from src.utils import resolve_device_target as r; print(r("auto"))' "$recipe_dir" 2>/dev/null | tail -1) ;;
  *) echo "ERROR: --device must be auto|npu|gpu|cpu, got '$device'" >&2; exit 2 ;;
esac
work=$PWD/${model}_train_parallel
mkdir -p "$work"
common_flags=(--is_distributed=1 --device_num="$RANK_SIZE" --train_model="$model" --train_path="$train_path"
              --eval_path="$eval_path" --device_target="$target" --ckpt_path="$work/ckpt" --output_path="$work")

if [ "$target" = Ascend ]; then
  # as the original: RANK_TABLE_FILE / RANK_SIZE / RANK_ID / DEVICE_ID per process, HCCL reads the table
  export RANK_TABLE_FILE=$table RANK_SIZE
  pids=() i=0
  for dev in $LOCAL_DEVICE_IDS; do
    rank=$((RANK_START + i))
    mkdir -p "$work/train_parallel$rank"
    (cd "$work/train_parallel$rank" && env > env.log &&
     DEVICE_ID=$dev RANK_ID=$rank exec "$MZ_PYTHON" "$recipe_dir/train.py" "${common_flags[@]}" \
       --device_id="$dev" "${extra[@]}" > log 2>&1) &
    pids+=($!); i=$((i + 1))
  done
  status=0
  for pid in "${pids[@]}"; do
    wait -n || { status=$?; kill "${pids[@]}" 2>/dev/null; }   # one rank failing ends the job
  done
  [ $status -eq 0 ] && tail -n 6 "$work/train_parallel$RANK_START/log"
  exit $status
fi

# elsewhere: MindSpore's dynamic cluster. msrun decides whether to start the scheduler by asking whether
# master_addr is one of this host's addresses, so only the master server runs msrun; another server starts its
# workers with the same environment msrun would give them (MS_ROLE, MS_SCHED_HOST/PORT, MS_NODE_ID, ...).
# This also lets two "servers" share one host (loopback tests), where msrun would start a second scheduler.
if [ "$SERVER_INDEX" != "$MASTER_INDEX" ]; then
  pids=() i=0
  for dev in $LOCAL_DEVICE_IDS; do
    rank=$((RANK_START + i))
    mkdir -p "$work/train_parallel$rank"
    (cd "$work/train_parallel$rank" &&
     MS_ROLE=MS_WORKER MS_WORKER_NUM=$RANK_SIZE MS_SCHED_HOST=$MASTER_ADDR MS_SCHED_PORT=$master_port \
     MS_TOPO_TIMEOUT=${MZ_CLUSTER_TIMEOUT:-300} MS_NODE_ID=$rank RANK_ID=$rank RANK_SIZE=$RANK_SIZE DEVICE_ID=$i \
     exec "$MZ_PYTHON" "$recipe_dir/train.py" "${common_flags[@]}" "${extra[@]}" > log 2>&1) &
    pids+=($!); i=$((i + 1))
  done
  status=0
  for pid in "${pids[@]}"; do
    wait -n || { status=$?; kill "${pids[@]}" 2>/dev/null; }
  done
  [ $status -ne 0 ] && echo "ERROR: distributed job failed on server $SERVER_INDEX (exit $status); logs in $work/train_parallel*/log" >&2
  exit $status
fi

# the master server: msrun, which spawns `python` from PATH, so put the environment's interpreter first
export PATH="$(dirname "$MZ_PYTHON"):$PATH"
command -v msrun >/dev/null || { echo "ERROR: msrun not found next to $MZ_PYTHON" >&2; exit 2; }
cd "$work" || exit 2
msrun --worker_num="$RANK_SIZE" --local_worker_num="$LOCAL_DEVICE_NUM" --master_addr="$MASTER_ADDR" \
  --master_port="$master_port" --node_rank="$SERVER_INDEX" --log_dir="$work/msrun_log" --join=True \
  --cluster_time_out="${MZ_CLUSTER_TIMEOUT:-300}" \
  "$recipe_dir/train.py" "${common_flags[@]}" "${extra[@]}" > "$work/msrun.log" 2>&1
status=$?
for ((i = 0; i < LOCAL_DEVICE_NUM; i++)); do   # per-rank logs where the original kept them
  rank=$((RANK_START + i))
  [ -f "$work/msrun_log/worker_$rank.log" ] && mkdir -p "$work/train_parallel$rank" &&
    grep -v -e '^\[WARNING\]' -e '^\[INFO\]' "$work/msrun_log/worker_$rank.log" > "$work/train_parallel$rank/log"
done
if [ $status -ne 0 ]; then
  echo "ERROR: distributed job failed (exit $status); logs in $work/msrun_log and $work/train_parallel*/log" >&2
  exit $status
fi
[ -f "$work/train_parallel0/log" ] && sed -n '/Final result/,$p' "$work/train_parallel0/log"
exit 0
