#!/bin/bash
# the stand-in 2-rank job of ci/tests/test_kill_trials.py, started as the recipes' multi-device scripts are
exec "${MZ_PYTHON:-python3}" "$(dirname "$0")/fake_job.py" "$@"
