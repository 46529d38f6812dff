# Sourced by test/train_*.sh after common/sh/env.sh and mz_parse_test_args: turns the Ascend flags into
# one tools/train.py command line. Hyper-parameters stay in the configs; a script names its config, its
# default batch and the overrides the original script passed (--cfg-options). R50_PERF=1 (the
# train_performance_*.sh scripts) passes --perf: the run record is <CaseName>_perf instead of _acc.

# r50_args CONFIG DEFAULT_BATCH [cfg-option ...]  -> R50_ARGS
r50_args() {
  local config=$1 batch=${batch_size:-$2}
  shift 2
  R50_ARGS=("configs/resnet/$config" --work-dir "$output_path" --data-path "$data_path" --device "$device"
            --cfg-options "data.samples_per_gpu=$batch" "$@")
  if [ -n "$train_epochs" ]; then R50_ARGS+=("runner.max_epochs=$train_epochs"); fi
  if [ -n "$train_steps" ]; then R50_ARGS+=(--train-steps "$train_steps"); fi
  if [ -n "${R50_PERF:-}" ]; then R50_ARGS+=(--perf); fi
  R50_ARGS+=("${MZ_EXTRA_ARGS[@]}")
}

# r50_train_1p CONFIG DEFAULT_BATCH [cfg-option ...]
r50_train_1p() {
  r50_args "$@"
  cd "$MZ_RECIPE_DIR" || return 2
  mz_run_logged "$output_path/train_${ASCEND_DEVICE_ID:-0}.log" \
    "$MZ_PYTHON" tools/train.py "${R50_ARGS[@]}" --gpu-id "${ASCEND_DEVICE_ID:-0}"
}

# r50_check_resume WORLD ARG...: when ARG... (train.py's flags) resume (--resume=auto|PATH, --resume-from=PATH),
# refuse checkpoints written by a job of another rank count than WORLD with one ERROR line and status 2, before
# torchrun starts (the workers check too, but their exit goes through torchrun's failure report). Reads the
# checkpoint metadata without torch (mmcls_ext/resume.py run as a file: no mmcv import either).
r50_check_resume() {
  local world=$1 resume="" a prev=""
  shift
  for a in "$@"; do
    case "$prev" in --resume|--resume-from) resume=$a ;; esac
    case "$a" in --resume=*|--resume-from=*) resume=${a#*=} ;; esac
    prev=$a
  done
  [ -z "$resume" ] && return 0
  "$MZ_PYTHON" "$MZ_RECIPE_DIR/mmcls_ext/resume.py" --work-dir "$output_path" --resume "$resume" --world "$world"
}

# r50_train_8p CONFIG DEFAULT_BATCH [cfg-option ...]: torchrun over the devices of this server.
# --rank_table=FILE (HCCL table, read by common.rank_table) gives nodes, this node's rank, its device ids
# and the master; without one, 8 local processes (or --device_num=N) as the original dist_train.sh.
# --server_index=N picks this server in a multi-server table when its address does not identify it.
# --max_restarts=N (or MAX_RESTARTS=N in the environment; default 0, as before): torchrun restarts the workers
# after a failure up to N times, and the restarted workers resume from their newest common checkpoint.
r50_train_8p() {
  local rank_table="" device_num="" server_index=auto max_restarts=${MAX_RESTARTS:-0} rest=() a
  for a in "${MZ_EXTRA_ARGS[@]}"; do
    case "$a" in
      --rank_table=*) rank_table=${a#*=} ;;
      --device_num=*) device_num=${a#*=} ;;
      --server_index=*) server_index=${a#*=} ;;
      --max_restarts=*) max_restarts=${a#*=} ;;
      *) rest+=("$a") ;;
    esac
  done
  if ! [[ "$max_restarts" =~ ^[0-9]+$ ]]; then
    echo "ERROR: --max_restarts / MAX_RESTARTS must be an integer >= 0, got '$max_restarts'" >&2
    return 2
  fi
  MZ_EXTRA_ARGS=("${rest[@]}")
  local nnodes=1 node_rank=0 nproc=${device_num:-8} master=127.0.0.1 world
  world=$nproc
  if [ -n "$rank_table" ]; then
    local assignments
    assignments=$("$MZ_PYTHON" -m common.rank_table "$rank_table" --server_index "$server_index" \
                  ${device_num:+--device_num "$device_num"}) || return 2
    eval "$assignments"
    export RANK_TABLE_FILE RANK_SIZE
    nnodes=$SERVER_COUNT node_rank=$SERVER_INDEX nproc=$LOCAL_DEVICE_NUM master=$MASTER_ADDR world=$RANK_SIZE
    case "$device" in
      gpu) export CUDA_VISIBLE_DEVICES=${LOCAL_DEVICE_IDS// /,} ;;
      npu) export ASCEND_RT_VISIBLE_DEVICES=${LOCAL_DEVICE_IDS// /,} ;;
    esac
  fi
  r50_args "$@"
  cd "$MZ_RECIPE_DIR" || return 2
  r50_check_resume "$world" "${MZ_EXTRA_ARGS[@]}" || return $?
  mz_run_logged "$output_path/train_${ASCEND_DEVICE_ID:-0}.log" \
    "$MZ_PYTHON" -m torch.distributed.run --nnodes="$nnodes" --node_rank="$node_rank" --nproc_per_node="$nproc" \
    --master_addr="$master" --master_port="${PORT:-29500}" --max-restarts="$max_restarts" \
    tools/train.py "${R50_ARGS[0]}" --seed 0 --launcher pytorch "${R50_ARGS[@]:1}" ${R50_PERF_REPORT:+--perf-report}
}

# The original scripts source test/env_npu.sh (the CANN environment) unless etp_running_flag=true; here also
# only when a CANN stack is installed, so CPU and GPU hosts run unchanged (MZ_ASCEND_ROOT: see env_npu.sh).
r50_has_cann() {
  local root=${MZ_ASCEND_ROOT:-}
  if [ -z "$root" ] && [ -f /etc/Ascend/ascend_cann_install.info ]; then
    root=$(sed -n 's/^Install_Path=//p' /etc/Ascend/ascend_cann_install.info | head -n 1)
  fi
  root=${root:-/usr/local/Ascend}
  [ -f "$root/ascend-toolkit/set_env.sh" ] || [ -f "$root/nnae/set_env.sh" ]
}
if [ "${etp_running_flag:-}" != "true" ] && r50_has_cann; then
  source "$MZ_RECIPE_DIR/test/env_npu.sh"
fi

