# Sourced by test/train_*_1p.sh after mz_parse_test_args: the Ascend test flags as train.py flags (td_args).
case "$device" in
  cpu) td_device=CPU ;; gpu) td_device=GPU ;; npu) td_device=Ascend ;; *) td_device=auto ;;
esac
td_args=(--data_path="$data_path" --output_path="$output_path" --device_target="$td_device")
[ -n "$train_epochs" ] && td_args+=(--epoch_size="$train_epochs")
[ -n "$batch_size" ] && td_args+=(--batch_size="$batch_size")
[ -n "$train_steps" ] && td_args+=(--train_steps="$train_steps")
