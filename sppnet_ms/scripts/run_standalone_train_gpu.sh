#!/usr/bin/env bash
# Single-device training as the original: bash run_standalone_train_gpu.sh TRAIN_PATH EVAL_PATH DEVICE_ID TRAIN_MODEL
# Runs in ./<TRAIN_MODEL>/ (checkpoints in ./<TRAIN_MODEL>/ckpt, output in ./<TRAIN_MODEL>/log); extra flags pass on.
if [ $# -lt 4 ]; then
  echo "Usage: bash $0 TRAIN_PATH EVAL_PATH DEVICE_ID TRAIN_MODEL [train.py flags]" >&2; exit 2
fi
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/standalone_common.sh" train GPU "$@"
