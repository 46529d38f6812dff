#!/usr/bin/env bash
# 8 devices x batch 256, 2 epochs: resnet50_8xb256_cifar100_perf (speed).
cur_path=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export MZ_RECIPE_DIR=$(dirname "$cur_path")
source "$MZ_RECIPE_DIR/../common/sh/env.sh" torch || exit 2
mz_parse_test_args "$@" || exit 2
source "$cur_path/lib.sh"
r50_train_8p resnet50_8xb256_cifar100_perf.py 256 || exit $?
