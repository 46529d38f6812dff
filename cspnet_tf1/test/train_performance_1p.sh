#!/usr/bin/env bash
# Performance run of CSPNet on one device: the original's 5 epochs, record named ..._perf; flags as train_full_1p.sh
# (a --train_epochs= given here wins over the 5).
exec bash "$(dirname "${BASH_SOURCE[0]}")/train_full_1p.sh" --train_epochs=5 --perf "$@"
