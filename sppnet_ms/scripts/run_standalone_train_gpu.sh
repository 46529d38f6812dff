#!/usr/bin/env bash
# Single-device training as the original:
#   bash run_standalone_train_gpu.sh TRAIN_PATH EVAL_PATH DEVICE_ID TRAIN_MODEL [train.py flags]
# TRAIN_MODEL: zfnet, sppnet_single or sppnet_mult. Runs train.py --device_target=GPU in ./<TRAIN_MODEL>/
# (checkpoints in ./<TRAIN_MODEL>/ckpt, output in ./<TRAIN_MODEL>/log and on the terminal).
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/standalone_common.sh" train GPU "$@"
