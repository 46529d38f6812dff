#!/usr/bin/env bash
# 1 device, batch 16: resnet50_8xb16_cifar100 (200 epochs, step lr).
# Flags: --data_path=DIR (required) --output_path=DIR --batch_size=N --train_epochs=N --device=auto|cpu|gpu|npu
# --train_steps=N (at most N steps per epoch); any other flag goes to tools/train.py (--seed=0, --amp, ...).
cur_path=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export MZ_RECIPE_DIR=$(dirname "$cur_path")
source "$MZ_RECIPE_DIR/../common/sh/env.sh" torch || exit 2
mz_parse_test_args "$@" || exit 2
source "$cur_path/lib.sh"
r50_train_1p resnet50_8xb16_cifar100.py 16 || exit $?
