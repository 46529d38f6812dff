#!/usr/bin/env bash
# Evaluation as the original:
#   bash run_standalone_eval_gpu.sh TEST_DATA_PATH CKPT_PATH DEVICE_ID TEST_MODEL [eval.py flags]
# TEST_MODEL: zfnet, sppnet_single or sppnet_mult. Runs eval.py --device_target=GPU; output in ./eval_log and on
# the terminal.
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/standalone_common.sh" eval GPU "$@"
