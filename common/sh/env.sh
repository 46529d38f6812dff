# Sourced by every recipe's shell scripts:  source "<repo>/common/sh/env.sh" <tf|torch|mindspore>
# Sets MZ_ROOT and MZ_PYTHON and puts the clone's root on PYTHONPATH (so `import common` is this clone's).
# MZ_PYTHON is the current python3 when it already has the framework, else the repo's .envs/<name>.
mz_env_name=${1:?usage: source common/sh/env.sh tf|torch|mindspore}
MZ_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export MZ_ROOT
export PYTHONPATH="$MZ_ROOT${PYTHONPATH:+:$PYTHONPATH}"
case "$mz_env_name" in
  tf) mz_mods="tensorflow tf_keras"; export TF_USE_LEGACY_KERAS=1 TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2} ;;
  torch) mz_mods="torch mmcv mmcls" ;;
  mindspore) mz_mods="mindspore" ;;
  *) echo "ERROR: common/sh/env.sh: unknown environment '$mz_env_name'" >&2; return 2 2>/dev/null || exit 2 ;;
esac
mz_has() { "$1" -c 'import importlib.util,sys; sys.exit(0 if all(importlib.util.find_spec(m) for m in sys.argv[1:]) else 1)' $mz_mods 2>/dev/null; }
if [ -n "${MZ_PYTHON:-}" ] && mz_has "$MZ_PYTHON"; then :
elif command -v python3 >/dev/null 2>&1 && mz_has python3; then MZ_PYTHON=$(command -v python3)
elif [ -x "$MZ_ROOT/.envs/$mz_env_name/bin/python" ]; then MZ_PYTHON="$MZ_ROOT/.envs/$mz_env_name/bin/python"
else
  echo "ERROR: no Python with $mz_mods found: run 'make setup' in $MZ_ROOT (builds .envs/$mz_env_name)" >&2
  return 2 2>/dev/null || exit 2
fi
export MZ_PYTHON
# the E2E duration in the banner counts from here, like the Ascend scripts' start_time
export MODELZOO_START_TIME=${MODELZOO_START_TIME:-$(date +%s.%N)}

# mz_usage: the calling script's leading comment block (after the #! line) on stdout, then exit 0: the one
# `-h` of every test/*.sh and scripts/*.sh.
mz_usage() {
  sed -n '2,${/^#/!q;s/^# \{0,1\}//p}' "$0"
  exit 0
}

# mz_parse_test_args "$@": the Ascend test/*.sh flags. Sets data_path output_path train_epochs batch_size
# device train_steps; other --k=v flags are kept in MZ_EXTRA_ARGS for the recipe to pass on or reject.
# -h/--help prints the script's usage and exits 0.
mz_parse_test_args() {
  data_path="" output_path="" train_epochs="" batch_size="" device="auto" train_steps="" MZ_EXTRA_ARGS=()
  for para in "$@"; do
    case "$para" in
      --data_path=*) data_path=${para#*=} ;;
      --output_path=*) output_path=${para#*=} ;;
      --train_epochs=*) train_epochs=${para#*=} ;;
      --batch_size=*) batch_size=${para#*=} ;;
      --device=*) device=${para#*=} ;;
      --train_steps=*) train_steps=${para#*=} ;;
      -h|--help) mz_usage ;;
      *) MZ_EXTRA_ARGS+=("$para") ;;
    esac
  done
  if [ -z "$data_path" ]; then
    echo "ERROR: --data_path=<dataset folder or its parent> is required" >&2
    return 2
  fi
  if [ ! -e "$data_path" ]; then
    echo "ERROR: $data_path: data path does not exist" >&2
    return 2
  fi
  case "$device" in auto|cpu|gpu|npu) ;; *) echo "ERROR: --device must be auto|cpu|gpu|npu, got '$device'" >&2; return 2 ;; esac
  for v in train_epochs batch_size train_steps; do
    if [ -n "${!v}" ] && ! [[ "${!v}" =~ ^[1-9][0-9]*$ ]]; then
      echo "ERROR: --$v must be a positive integer, got '${!v}'" >&2; return 2
    fi
  done
  data_path=$(cd "$data_path" 2>/dev/null && pwd || echo "$data_path")
  output_path=${output_path:-${MZ_RECIPE_DIR:-$PWD}/test/output/${ASCEND_DEVICE_ID:-0}}
  mkdir -p "$output_path" && output_path=$(cd "$output_path" && pwd)
  return 0
}

# mz_split_launch_args: after mz_parse_test_args in a multi-device script of a TF recipe, split MZ_EXTRA_ARGS
# into launch_args (--rank_table made absolute, --server_index, --device_num, --port: for common/launch.py)
# and train_args (the rest, for train.py). A missing --rank_table is one error line and status 2.
mz_split_launch_args() {
  launch_args=() train_args=()
  local a t has_table=
  for a in "${MZ_EXTRA_ARGS[@]}"; do
    case "$a" in
      --rank_table=*) t=${a#*=}; [[ "$t" = /* ]] || t="$PWD/$t"; launch_args+=("--rank_table=$t"); has_table=1 ;;
      --server_index=*|--device_num=*|--port=*) launch_args+=("$a") ;;
      *) train_args+=("$a") ;;
    esac
  done
  if [ -z "$has_table" ]; then
    echo "ERROR: --rank_table=<rank_table.json> is required" >&2
    return 2
  fi
  return 0
}

# mz_run_logged LOGFILE cmd...: run a command, mirror its output into LOGFILE, return its exit status.
mz_run_logged() {
  local log=$1; shift
  mkdir -p "$(dirname "$log")"
  set -o pipefail
  "$@" 2>&1 | tee "$log"
  local rc=$?
  set +o pipefail
  return $rc
}
