# Sourced by the test/*.sh scripts after mz_parse_test_args: maps the Ascend test flags onto train.py flags.
case "$device" in
  cpu) device_target=CPU ;; gpu) device_target=GPU ;; npu) device_target=Ascend ;; *) device_target=auto ;;
esac
sppnet_args=(--train_path="$data_path" --eval_path="$data_path" --device_target="$device_target"
             --device_id="${ASCEND_DEVICE_ID:-0}" --ckpt_path="$output_path/ckpt" --output_path="$output_path")
[ -n "$train_epochs" ] && sppnet_args+=(--epoch_size="$train_epochs")
[ -n "$batch_size" ] && sppnet_args+=(--batch_size="$batch_size")
[ -n "$train_steps" ] && sppnet_args+=(--train_steps="$train_steps")
