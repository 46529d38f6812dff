#!/usr/bin/env bash
# Evaluation as the original: bash run_standalone_eval_gpu.sh TEST_DATA_PATH CKPT_PATH DEVICE_ID TEST_MODEL
# Output goes to ./eval_log (and the terminal); extra eval.py flags pass on.
if [ $# -lt 4 ]; then
  echo "Usage: bash $0 TEST_DATA_PATH CKPT_PATH DEVICE_ID TEST_MODEL [eval.py flags]" >&2; exit 2
fi
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/standalone_common.sh" eval GPU "$@"
