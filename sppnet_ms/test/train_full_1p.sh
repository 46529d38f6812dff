#!/usr/bin/env bash
# Full single-device training of ZFNet/SPPNet (default sppnet_single; --train_model=... to choose), then the banner.
# Usage: bash test/train_full_1p.sh --data_path=<imagenet folder or parent> [--output_path= --train_epochs=
#        --batch_size= --device=auto|cpu|gpu|npu --train_steps=<steps per epoch>] [train.py flags as --k=v]
cur_path=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export MZ_RECIPE_DIR=$(dirname "$cur_path")
source "$MZ_RECIPE_DIR/../common/sh/env.sh" mindspore || exit 2
mz_parse_test_args "$@" || exit 2
source "$cur_path/common_args.sh"
cd "$MZ_RECIPE_DIR"
mz_run_logged "$output_path/train_${ASCEND_DEVICE_ID:-0}.log" \
  "$MZ_PYTHON" train.py "${sppnet_args[@]}" "${MZ_EXTRA_ARGS[@]}" || exit $?
