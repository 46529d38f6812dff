# Sourced by test/train_*.sh after common/sh/env.sh and mz_parse_test_args: turns the Ascend flags into
# one tools/train.py command line. Hyper-parameters stay in the configs; a script names its config, its
# default batch and the overrides the original script passed (--cfg-options).

# r50_args CONFIG DEFAULT_BATCH [cfg-option ...]  -> R50_ARGS
r50_args() {
  local config=$1 batch=${batch_size:-$2}
  shift 2
  R50_ARGS=("configs/resnet/$config" --work-dir "$output_path" --data-path "$data_path" --device "$device"
            --cfg-options "data.samples_per_gpu=$batch" "$@")
  if [ -n "$train_epochs" ]; then R50_ARGS+=("runner.max_epochs=$train_epochs"); fi
  if [ -n "$train_steps" ]; then R50_ARGS+=(--train-steps "$train_steps"); fi
  R50_ARGS+=("${MZ_EXTRA_ARGS[@]}")
}

# r50_train_1p CONFIG DEFAULT_BATCH [cfg-option ...]
r50_train_1p() {
  r50_args "$@"
  cd "$MZ_RECIPE_DIR" || return 2
  mz_run_logged "$output_path/train_${ASCEND_DEVICE_ID:-0}.log" \
    "$MZ_PYTHON" tools/train.py "${R50_ARGS[@]}" --gpu-id "${ASCEND_DEVICE_ID:-0}"
}
