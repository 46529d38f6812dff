#!/usr/bin/env bash
# 1-device performance run as the original: 5 epochs, static shapes, CaseName *_static_eval_perf.
# Flags as train_full_1p.sh (a --train_epochs= given here wins).
exec bash "$(dirname "${BASH_SOURCE[0]}")/train_full_1p.sh" --train_epochs=5 --perf "$@"
