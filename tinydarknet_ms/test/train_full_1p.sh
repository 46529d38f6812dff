#!/usr/bin/env bash
# Tiny-DarkNet full training on one device: the config's schedule (500 epochs unless --train_epochs).
cur_path=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export MZ_RECIPE_DIR=$(dirname "$cur_path")
source "$MZ_RECIPE_DIR/../common/sh/env.sh" mindspore || exit 2
mz_parse_test_args "$@" || exit 2
source "$MZ_RECIPE_DIR/test/common_args.sh"
cd "$MZ_RECIPE_DIR"
mz_run_logged "$output_path/train_${ASCEND_DEVICE_ID:-0}.log" "$MZ_PYTHON" train.py "${td_args[@]}" "${MZ_EXTRA_ARGS[@]}" || exit $?
