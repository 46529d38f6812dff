# The MindSpore recipes' launcher, sourced first by every sppnet_ms/scripts/*.sh and tinydarknet_ms/scripts/*.sh:
#   source "<repo>/common/sh/ms_launch.sh" "$@"
# It sources env.sh (MZ_PYTHON, MZ_ROOT), answers -h/--help with the calling script's comment header (exit 0) and
# defines the functions below; a recipe's script keeps only its own positional arguments and train.py flags.
#
# A distributed script calls, in this order:
#   ms_take_flags "$@"            launcher flags out of the arguments (the rest, in order, in MZ_ARGS):
#       --device=auto|npu|gpu|cpu or --device_target=auto|Ascend|GPU|CPU   (default auto)
#       --server_index=auto|N     env SERVER_INDEX      this server in server_list (auto: the only one, or the
#                                                       one whose server_id is an address of this host)
#       --master_port=N           env MASTER_PORT       msrun's scheduler port (default 8118)
#       --cluster_time_out=S      env CLUSTER_TIME_OUT  seconds the ranks wait for each other to join the cluster
#                                                       (msrun --cluster_time_out, MS_TOPO_TIMEOUT; default 300;
#                                                       MZ_CLUSTER_TIMEOUT is read when it is unset)
#     A flag wins over its environment variable.
#   ms_read_table TABLE           the HCCL rank table through common.rank_table: RANK_TABLE_FILE RANK_SIZE
#                                 SERVER_INDEX MASTER_INDEX MASTER_ADDR LOCAL_DEVICE_NUM RANK_START
#                                 LOCAL_DEVICE_IDS LOCAL_RANK_IDS (a bad table: one ERROR line, exit 2)
#   ms_resolve_target             MZ_TARGET=Ascend|GPU|CPU (the one Ascend detection of these scripts)
#   ms_launch WORK LOGS TRAIN_PY [flags]   runs this server's ranks of TRAIN_PY --device_target=$MZ_TARGET [flags]
#                                 and returns the job's status:
#     Ascend: as the originals, one process per device of this server, in WORK/train_parallel<rank>/ (env.log,
#       log) with RANK_TABLE_FILE RANK_SIZE RANK_ID DEVICE_ID DEVICE_NUM; HCCL reads the table.
#     GPU/CPU, the server holding rank 0: msrun (MindSpore's dynamic cluster; NCCL on GPU, its own collectives on
#       CPU), which also starts the scheduler; logs LOGS/worker_<rank>.log, msrun's own in LOGS/msrun.log.
#     GPU/CPU, any other server: its workers with the environment msrun gives them (MS_ROLE=MS_WORKER,
#       MS_WORKER_NUM, MS_SCHED_HOST/PORT = rank 0's server and MASTER_PORT, MS_NODE_ID = RANK_ID = rank,
#       MS_TOPO_TIMEOUT), logs LOGS/worker_<rank>.log. msrun starts a scheduler whenever master_addr is an
#       address of this host, so this is also what lets two "servers" share one host (the loopback tests).
#   Each branch runs in WORK. The log of this server's first rank is echoed on the console, without MindSpore's
#   [INFO]/[WARNING] lines (they stay in the log). If a rank fails, the others are stopped (SIGTERM, SIGKILL after
#   MZ_STOP_GRACE=10 s) and one "ERROR: distributed job failed" line names the logs. SIGINT/SIGTERM to the script
#   stops the ranks (SIGTERM, or SIGINT to msrun, which passes it on; SIGKILL after the grace); exit 128+N.
#   The job's status is the first failed rank's (msrun's own is 1 for any failure: its log names the rank's;
#   a rank killed by signal N: 128+N); a rank that stopped with exit 2 and an "ERROR:" line of its own (a
#   refused input, e.g. a checkpoint of another rank count) gets no second "distributed job failed" line.
#   ms_rank_logs WORK LOGS        copies each local worker log, without MindSpore's [INFO]/[WARNING] lines, to
#                                 WORK/train_parallel<rank>/log (where the Ascend branch writes it)
# Every script: ms_fail MSG (one "ERROR: MSG" line, exit 2), ms_positional N "NAMES" "$@".

source "$(dirname "${BASH_SOURCE[0]}")/env.sh" mindspore || exit 2
for mz_a in "$@"; do case "$mz_a" in -h|--help) mz_usage ;; esac; done
unset mz_a

ms_fail() {
  echo "ERROR: $*" >&2
  exit 2
}

# ms_positional N "NAMES" ARGS...: the first N arguments are present and are not --flags.
ms_positional() {
  local n=$1 names=$2 i; shift 2
  for ((i = 1; i <= n; i++)); do
    case "${!i-}" in ""|--*) ms_fail "$(basename "$0") needs $names (bash $0 -h for usage)" ;; esac
  done
}

ms_take_flags() {
  MZ_DEVICE=auto MZ_ARGS=()
  SERVER_INDEX=${SERVER_INDEX:-auto}
  MASTER_PORT=${MASTER_PORT:-8118}
  CLUSTER_TIME_OUT=${CLUSTER_TIME_OUT:-${MZ_CLUSTER_TIMEOUT:-300}}
  local a
  for a in "$@"; do
    case "$a" in
      --device=*|--device_target=*) MZ_DEVICE=${a#*=} ;;
      --server_index=*) SERVER_INDEX=${a#*=} ;;
      --master_port=*) MASTER_PORT=${a#*=} ;;
      --cluster_time_out=*) CLUSTER_TIME_OUT=${a#*=} ;;
      *) MZ_ARGS+=("$a") ;;
    esac
  done
  [[ "$SERVER_INDEX" =~ ^(auto|[0-9]+)$ ]] || ms_fail "--server_index / SERVER_INDEX must be auto or a number, got '$SERVER_INDEX'"
  [[ "$MASTER_PORT" =~ ^[0-9]{1,5}$ ]] && [ "$MASTER_PORT" -ge 1024 ] && [ "$MASTER_PORT" -le 65535 ] ||
    ms_fail "--master_port / MASTER_PORT must be a port number in 1024..65535, got '$MASTER_PORT'"
  [[ "$CLUSTER_TIME_OUT" =~ ^-?[0-9]+$ ]] ||
    ms_fail "--cluster_time_out / CLUSTER_TIME_OUT must be whole seconds (negative: wait forever), got '$CLUSTER_TIME_OUT'"
  case "${MZ_DEVICE,,}" in
    auto|npu|ascend|gpu|cpu) ;;
    *) ms_fail "--device must be auto|npu|gpu|cpu (or --device_target auto|Ascend|GPU|CPU), got '$MZ_DEVICE'" ;;
  esac
}

ms_read_table() {
  [ -f "$1" ] || ms_fail "$1: rank table not found"
  local assignments
  assignments=$("$MZ_PYTHON" -m common.rank_table "$1" --server_index "$SERVER_INDEX") || exit 2
  eval "$assignments"
}

# Ascend when its runtime (the acl module) imports and MindSpore can use it; else a GPU MindSpore can use; else CPU.
# Only an Ascend or GPU host pays for importing MindSpore here.
ms_resolve_target() {
  case "${MZ_DEVICE,,}" in
    npu|ascend) MZ_TARGET=Ascend ;;
    gpu) MZ_TARGET=GPU ;;
    cpu) MZ_TARGET=CPU ;;
    *) MZ_TARGET=$("$MZ_PYTHON" - 2>/dev/null <<'EOF' | tail -n 1
import importlib.util, os, shutil

def usable(target):
    try:
        import mindspore
        return bool(mindspore.hal.is_available(target))
    except Exception:
        return False

if importlib.util.find_spec("acl") is not None and usable("Ascend"):
    print("Ascend")
elif (shutil.which("nvidia-smi") or os.path.exists("/dev/nvidia0")) and usable("GPU"):
    print("GPU")
else:
    print("CPU")
EOF
)
       MZ_TARGET=${MZ_TARGET:-CPU} ;;
  esac
}

ms_alive() {
  local p
  for p in "$@"; do kill -0 "$p" 2>/dev/null && return 0; done
  return 1
}

# ms_stop SIGNAL PIDS...: the signal, then SIGKILL to whatever is left after MZ_STOP_GRACE (10) seconds.
ms_stop() {
  local sig=$1 t; shift
  [ $# -gt 0 ] || return 0
  kill -s "$sig" "$@" 2>/dev/null
  for ((t = 0; t < ${MZ_STOP_GRACE:-10} * 2; t++)); do
    ms_alive "$@" || return 0
    sleep 0.5
  done
  kill -s KILL "$@" 2>/dev/null
}

# ms_wait_ranks PIDS...: wait for all; the first that fails stops the others; returns its status. Polls rather than
# `wait -n PID...`, which needs bash 5.1 (an Ascend host may have 4.x).
ms_wait_ranks() {
  local pids=("$@") left others p q status
  while [ ${#pids[@]} -gt 0 ]; do
    left=()
    for p in "${pids[@]}"; do
      if kill -0 "$p" 2>/dev/null; then left+=("$p"); continue; fi
      wait "$p"; status=$?
      if [ $status -ne 0 ]; then
        others=(); for q in "${pids[@]}"; do [ "$q" = "$p" ] || others+=("$q"); done
        ms_stop TERM "${others[@]}"
        wait "${others[@]}" 2>/dev/null
        return $status
      fi
    done
    pids=("${left[@]}")
    [ ${#pids[@]} -eq 0 ] || sleep 1
  done
  return 0
}

ms_launch() {
  local work=$1 logs=$2 script=$3; shift 3
  local job=("$script" --device_target="$MZ_TARGET" "$@")
  local devs ranks i pids=() echo_log echo_pid where
  MZ_STOP_SIGNAL=TERM
  read -r -a devs <<< "$LOCAL_DEVICE_IDS"
  read -r -a ranks <<< "$LOCAL_RANK_IDS"
  mkdir -p "$work" || ms_fail "$work: cannot create the work folder"
  if [ "$MZ_TARGET" = Ascend ]; then
    ulimit -u unlimited 2>/dev/null
    for i in "${!devs[@]}"; do
      mkdir -p "$work/train_parallel${ranks[$i]}"
      (cd "$work/train_parallel${ranks[$i]}" &&
       export RANK_TABLE_FILE RANK_SIZE DEVICE_NUM=$LOCAL_DEVICE_NUM DEVICE_ID=${devs[$i]} RANK_ID=${ranks[$i]} &&
       env > env.log && exec "$MZ_PYTHON" "${job[@]}" > log 2>&1) &
      pids+=($!)
      [ "${ranks[$i]}" = "$RANK_START" ] && echo_pid=$! echo_log=$work/train_parallel$RANK_START/log
    done
    where="$work/train_parallel*/log"
  elif [ "$SERVER_INDEX" != "$MASTER_INDEX" ]; then
    mkdir -p "$logs"
    for i in "${!ranks[@]}"; do
      (cd "$work" && export MS_ROLE=MS_WORKER MS_WORKER_NUM=$RANK_SIZE MS_SCHED_HOST=$MASTER_ADDR \
         MS_SCHED_PORT=$MASTER_PORT MS_TOPO_TIMEOUT=$CLUSTER_TIME_OUT MS_NODE_ID=${ranks[$i]} \
         RANK_ID=${ranks[$i]} RANK_SIZE DEVICE_ID=$i &&
       exec "$MZ_PYTHON" "${job[@]}" > "$logs/worker_${ranks[$i]}.log" 2>&1) &
      pids+=($!)
      [ "${ranks[$i]}" = "$RANK_START" ] && echo_pid=$! echo_log=$logs/worker_$RANK_START.log
    done
    where="$logs/worker_*.log (server $SERVER_INDEX)"
  else
    # msrun starts `python` from PATH: this environment's
    local bin
    bin=$(dirname "$MZ_PYTHON")
    [ -x "$bin/python" ] && PATH="$bin" command -v msrun >/dev/null ||
      ms_fail "msrun or python not found in $bin (MindSpore's launcher; run 'make setup')"
    mkdir -p "$logs"
    # msrun's own echo (tail -f, killed as soon as the workers end) can lose a rank's last lines: it is turned off
    # (--tail_worker_log names no rank) in favour of the echo below, which reads on until msrun has exited
    (cd "$work" && PATH="$bin:$PATH" exec msrun --worker_num="$RANK_SIZE" --local_worker_num="$LOCAL_DEVICE_NUM" \
       --master_addr="$MASTER_ADDR" --master_port="$MASTER_PORT" --node_rank="$SERVER_INDEX" --log_dir="$logs" \
       --join=True --cluster_time_out="$CLUSTER_TIME_OUT" --tail_worker_log="$RANK_SIZE" \
       "${job[@]}" > "$logs/msrun.log" 2>&1) &
    pids=($!) echo_pid=$! echo_log=$logs/worker_$RANK_START.log MZ_STOP_SIGNAL=INT
    where="$logs/worker_*.log and $logs/msrun.log"
  fi
  local tail_pid=""
  if [ -n "$echo_pid" ]; then
    tail -n +1 -s 0.5 -F --pid="$echo_pid" "$echo_log" 2>/dev/null |
      ms_quiet &
    tail_pid=$!
  fi
  trap 'ms_stop_on_signal 130' INT
  trap 'ms_stop_on_signal 143' TERM
  MZ_LAUNCHED=("${pids[@]}")
  ms_wait_ranks "${pids[@]}"
  local rc=$?
  trap - INT TERM
  [ -n "$tail_pid" ] && wait "$tail_pid" 2>/dev/null
  if [ $rc -ne 0 ] && [ "$MZ_STOP_SIGNAL" = INT ]; then
    # msrun exits 1 whatever failed; its log names the first failed worker's status (negative: killed by a
    # signal, reported as the shell does, 128+N), so a rank's usage error still ends the job with exit 2
    local code
    code=$(grep -o -m1 -e 'exit with exception. Error code: -\?[0-9]*' "$logs/msrun.log" 2>/dev/null | grep -o -e '-\?[0-9]*$')
    if [ -n "$code" ] && [ "$code" -ne 0 ]; then
      if [ "$code" -lt 0 ]; then rc=$((128 - code)); else rc=$code; fi
    fi
  fi
  # exit 2 with an ERROR line in the echoed log: a rank refused its input and said why in that one line
  if [ $rc -ne 0 ] && ! { [ $rc -eq 2 ] && [ -n "$echo_log" ] && grep -q '^ERROR: ' "$echo_log" 2>/dev/null; }; then
    echo "ERROR: distributed job failed (exit $rc); logs: $where" >&2
  fi
  return $rc
}

# msrun stops its workers on SIGINT (it exits 0 then) but not on SIGTERM; the ranks started here (in the
# background, so with SIGINT ignored) get SIGTERM
ms_stop_on_signal() {
  trap - INT TERM
  ms_stop "$MZ_STOP_SIGNAL" "${MZ_LAUNCHED[@]}"
  wait 2>/dev/null
  echo "ERROR: interrupted; the ranks were stopped" >&2
  exit "$1"
}

# stdin without MindSpore's [INFO] / [WARNING] lines
ms_quiet() {
  grep --line-buffered -v -e '^\[WARNING\]' -e '^\[INFO\]'
  return 0
}

ms_rank_logs() {
  local work=$1 logs=$2 r
  for r in $LOCAL_RANK_IDS; do
    [ -f "$logs/worker_$r.log" ] || continue
    mkdir -p "$work/train_parallel$r" &&
      ms_quiet < "$logs/worker_$r.log" > "$work/train_parallel$r/log"
  done
  return 0
}
