#!/usr/bin/env bash
# 8 devices x batch 256, 2 epochs: resnet50_8xb256_cifar100_perf (speed).
# Flags: --data_path=DIR (required) --output_path=DIR --batch_size=N --train_epochs=N --device=auto|cpu|gpu|npu
# --train_steps=N (at most N steps per epoch) --rank_table=FILE --device_num=N --server_index=N --max_restarts=N
# (torchrun restarts failed workers N times; they resume); any other flag goes to tools/train.py (--seed=0, ...).
cur_path=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export MZ_RECIPE_DIR=$(dirname "$cur_path")
source "$MZ_RECIPE_DIR/../common/sh/env.sh" torch || exit 2
mz_parse_test_args "$@" || exit 2
source "$cur_path/lib.sh"
R50_PERF=1 r50_train_8p resnet50_8xb256_cifar100_perf.py 256 || exit $?
