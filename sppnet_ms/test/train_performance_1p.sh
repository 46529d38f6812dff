#!/usr/bin/env bash
# Performance run: one short epoch (--train_steps, default 20 steps) of ZFNet/SPPNet, then the banner (case *_perf).
# Same flags as train_full_1p.sh; --train_epochs defaults to 1 here.
cur_path=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export MZ_RECIPE_DIR=$(dirname "$cur_path")
source "$MZ_RECIPE_DIR/../common/sh/env.sh" mindspore || exit 2
mz_parse_test_args "$@" || exit 2
train_epochs=${train_epochs:-1}
train_steps=${train_steps:-20}
source "$cur_path/common_args.sh"
cd "$MZ_RECIPE_DIR"
mz_run_logged "$output_path/train_${ASCEND_DEVICE_ID:-0}.log" \
  "$MZ_PYTHON" train.py --perf "${sppnet_args[@]}" "${MZ_EXTRA_ARGS[@]}" || exit $?
