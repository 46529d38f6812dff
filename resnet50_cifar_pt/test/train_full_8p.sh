#!/usr/bin/env bash
# 8 devices x batch 16 (or a rank table's devices): resnet50_8xb16_cifar100, 200 epochs; writes the perf report.
cur_path=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export MZ_RECIPE_DIR=$(dirname "$cur_path")
source "$MZ_RECIPE_DIR/../common/sh/env.sh" torch || exit 2
mz_parse_test_args "$@" || exit 2
source "$cur_path/lib.sh"
R50_PERF_REPORT=1 r50_train_8p resnet50_8xb16_cifar100.py 16 || exit $?
