# Sourced by the run_standalone_* scripts: standalone_common.sh train|eval Ascend|GPU PATH1 PATH2 DEVICE_ID MODEL [flags]
# Paths are made absolute before anything changes directory (the original exported them raw, so relative
# paths broke), and the GPU scripts really pass their arguments on (the original's never assigned them).
mode=$1 target=$2; shift 2
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/common/sh/ms_launch.sh" "$@" || exit 2
recipe=$MZ_ROOT/sppnet_ms
if [ "$mode" = train ]; then
  ms_positional 4 "TRAIN_PATH EVAL_PATH DEVICE_ID TRAIN_MODEL" "$@"
else
  ms_positional 4 "TEST_DATA_PATH CKPT_PATH DEVICE_ID TEST_MODEL" "$@"
fi
path1=$1 path2=$2 device_id=$3 model=$4; shift 4
case "$model" in zfnet|sppnet_single|sppnet_mult) ;; *) ms_fail "model must be zfnet, sppnet_single or sppnet_mult, got '$model'" ;; esac
[[ "$device_id" =~ ^[0-9]+$ ]] || ms_fail "DEVICE_ID must be a number, got '$device_id'"
[ -e "$path1" ] || ms_fail "$path1: does not exist"
[ -e "$path2" ] || ms_fail "$path2: does not exist"
path1=$(realpath "$path1") path2=$(realpath "$path2")
export DEVICE_ID=$device_id RANK_SIZE=1 RANK_ID=0
if [ "$mode" = train ]; then
  mkdir -p "./$model" && cd "./$model" || ms_fail "./$model: cannot create the work folder"
  mz_run_logged log "$MZ_PYTHON" "$recipe/train.py" --device_target="$target" --device_id="$device_id" \
    --train_path="$path1" --eval_path="$path2" --train_model="$model" --ckpt_path=./ckpt "$@"
else
  mz_run_logged eval_log "$MZ_PYTHON" "$recipe/eval.py" --device_target="$target" --device_id="$device_id" \
    --data_path="$path1" --ckpt_path="$path2" --test_model="$model" "$@"
fi
