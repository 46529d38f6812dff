#!/usr/bin/env bash
# Multi-device performance run (2 epochs, dynamic shapes, CaseName *_dynamic_eval_perf) on the devices of a
# rank table.
# Flags as train_full_8p.sh (a --train_epochs= given here wins).
exec bash "$(dirname "${BASH_SOURCE[0]}")/train_full_8p.sh" --train_epochs=2 --eval_static=False --perf "$@"
