#!/usr/bin/env bash
# Generic 1-device performance entry: 2 epochs, dynamic shapes, CaseName *_dynamic_eval_perf; the same
# run as train_performance_1p_dynamic_eval.sh. Flags as train_full_1p.sh (a --train_epochs= given here wins).
exec bash "$(dirname "${BASH_SOURCE[0]}")/train_full_1p.sh" --train_epochs=2 --eval_static=False --perf "$@"
