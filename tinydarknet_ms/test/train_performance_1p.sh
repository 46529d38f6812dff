#!/usr/bin/env bash
# Tiny-DarkNet performance run on one device: 2 epochs of at most 20 steps (first epoch = compile, excluded);
# train.py --perf, so the record is <CaseName>_perf. Same flags as train_full_1p.sh.
cur_path=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export MZ_RECIPE_DIR=$(dirname "$cur_path")
source "$MZ_RECIPE_DIR/../common/sh/env.sh" mindspore || exit 2
mz_parse_test_args "$@" || exit 2
train_epochs=${train_epochs:-2} train_steps=${train_steps:-20}
source "$MZ_RECIPE_DIR/test/common_args.sh"
td_args+=(--perf)
cd "$MZ_RECIPE_DIR"
mz_run_logged "$output_path/train_${ASCEND_DEVICE_ID:-0}.log" "$MZ_PYTHON" train.py "${td_args[@]}" "${MZ_EXTRA_ARGS[@]}" || exit $?
