#!/usr/bin/env bash
# GPU check of resnet50_cifar_pt on a bare GPU machine (its own torch, no package registry, no network).
#
#   bash ci/gpu_check.sh --prepare   here, with PyPI: writes ci/gpu_wheels/ (mmcv without ops, mmcls and the
#                                    small packages a torch-only image lacks, plus the digits data); carry it
#   bash ci/gpu_check.sh             there: installs those wheels into ci/gpu_site/, then runs the recipe's
#                                    perf script at batch 16 and 512 (AMP; 512 also channels-last), a resume
#                                    on CUDA and a few of the recipe's tests; prints images/sec against the
#                                    original's figures
#   bash ci/gpu_check.sh --dry-run   the same on CPU with tiny step counts (a rehearsal, not a measurement)
#
# Results: gpu_check.json and gpu_check.log in $OUT when set, else in bench_output/gpu_check/.
# GPU_CHECK_PYTHON: the Python with torch (default python3); GPU_CHECK_BUDGET_S: seconds for all the runs
# together (default 450 on a GPU, 900 for --dry-run), after which the remaining steps fail fast.
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WHEELS=$ROOT/ci/gpu_wheels
SITE=$ROOT/ci/gpu_site
PY=${GPU_CHECK_PYTHON:-python3}
RECIPE=$ROOT/resnet50_cifar_pt
# the original's per-device figures (Ascend 910, apex O2, torch 1.8): Resnet50_Cifar_for_PyTorch README
ORIG_BS16=390
ORIG_BS512=4196
# mmcv's and yapf's runtime needs that a torch image does not bring (numpy, pillow, opencv, matplotlib,
# pyyaml and packaging it does); pinned to what .envs/torch runs so both machines test the same code
SMALL_PINS="addict==2.4.0 yapf==0.43.0 platformdirs==4.14.9"

die() { echo "ERROR: ci/gpu_check.sh: $*" >&2; exit 2; }

mode=gpu
case "${1:-}" in
  "") ;;
  --prepare) mode=prepare ;;
  --dry-run) mode=dry ;;
  -h|--help) sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) die "unknown argument '$1' (expected --prepare, --dry-run or nothing)" ;;
esac
[ $# -le 1 ] || die "one argument at most, got $#"

# ---------------------------------------------------------------------------------------------------
prepare() {
  local total mmcv_pin mmcls_pin data_py
  mmcv_pin=$(grep -oE '^mmcv==[0-9.]+' "$RECIPE/requirements.txt") || die "no mmcv==X pin in resnet50_cifar_pt/requirements.txt"
  mmcls_pin=$(grep -oE '^mmcls==[0-9.]+' "$RECIPE/requirements.txt") || die "no mmcls==X pin in resnet50_cifar_pt/requirements.txt"
  # the digits come from scikit-learn, which the GPU image need not have: build them here, carry the files
  for data_py in "$ROOT/.envs/ci/bin/python" python3; do
    "$data_py" -c 'import sklearn, PIL, numpy' 2>/dev/null && break
    data_py=""
  done
  [ -n "$data_py" ] || die "--prepare needs a Python with scikit-learn and pillow for the digits: run 'make setup' first"
  # global, not local: the EXIT trap runs after this function has returned
  tmp=$(mktemp -d) || die "mktemp failed"
  # staged beside the final folder (same file system), so the swap at the end is two renames
  stage=$WHEELS.new
  trap 'rm -rf "$tmp" "$stage"' EXIT
  rm -rf "$stage" && mkdir -p "$stage" || die "cannot create $stage"
  echo "gpu_check --prepare: build environment (setuptools<81: mmcv 1.7's setup.py imports pkg_resources)"
  python3 -m venv "$tmp/build" && "$tmp/build/bin/python" -m pip install -q "setuptools<81" wheel >"$tmp/pip.log" 2>&1 \
    || { tail -5 "$tmp/pip.log" >&2; die "could not create the build environment (pip install setuptools<81 wheel)"; }
  echo "gpu_check --prepare: $mmcv_pin without compiled ops (pure Python: the recipe uses none of mmcv.ops)"
  MMCV_WITH_OPS=0 "$tmp/build/bin/python" -m pip wheel -q --no-deps --no-build-isolation -w "$stage" "$mmcv_pin" \
    >"$tmp/pip.log" 2>&1 || { tail -5 "$tmp/pip.log" >&2; die "building the $mmcv_pin wheel failed"; }
  echo "gpu_check --prepare: $mmcls_pin $SMALL_PINS (wheels for CPython 3.12)"
  # shellcheck disable=SC2086
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 -d "$stage" "$mmcls_pin" $SMALL_PINS >"$tmp/pip.log" 2>&1 \
    || { tail -5 "$tmp/pip.log" >&2; die "downloading $mmcls_pin $SMALL_PINS failed"; }
  for w in "$stage"/*.whl; do
    case "$(basename "$w")" in
      *-none-any.whl|*-cp312-*manylinux*x86_64*.whl) ;;
      *) die "$(basename "$w"): neither pure Python nor a CPython 3.12 x86-64 wheel" ;;
    esac
  done
  echo "gpu_check --prepare: digits data (CIFAR-100 format) via ci/make_data.py"
  "$data_py" "$ROOT/ci/make_data.py" --formats cifar100 --out "$stage/digits" >/dev/null \
    || die "ci/make_data.py failed"
  # MANIFEST last and the folder swapped in whole: the check takes a folder without it as incomplete
  (cd "$stage" && find . -type f ! -name MANIFEST | sort | while read -r f; do
     printf '%s %s %s\n' "$(sha256sum "$f" | cut -c1-16)" "$(stat -c %s "$f")" "${f#./}"; done) >"$stage/MANIFEST"
  chmod -R u+rwX,go+rX "$stage"  # make_data's temporary folder is private
  total=$(du -sb "$stage" | cut -f1)
  [ "$total" -le $((60 * 1000 * 1000)) ] || die "ci/gpu_wheels would hold $((total / 1000000)) MB, over the 60 MB carry budget"
  rm -rf "$WHEELS.old"
  [ -e "$WHEELS" ] && mv "$WHEELS" "$WHEELS.old"
  mv "$stage" "$WHEELS" && rm -rf "$WHEELS.old" || die "cannot move $stage to $WHEELS"
  awk '{printf "  %10.1f kB  %s\n", $2 / 1000, $3}' "$WHEELS/MANIFEST" | grep -v 'digits/\.stamp'
  printf 'gpu_check --prepare: ci/gpu_wheels/ holds %.1f MB; carry it (and nothing else) to the GPU machine\n' \
    "$(echo "$total" | awk '{print $1 / 1000000}')"
}

if [ "$mode" = prepare ]; then
  prepare
  exit 0
fi

# ---------------------------------------------------------------------------------------------------
# refuse early, each with one line: no wheels, no torch, no GPU (unless rehearsing)
[ -f "$WHEELS/MANIFEST" ] || die "ci/gpu_wheels/ is missing or incomplete: run 'bash ci/gpu_check.sh --prepare' on a machine with PyPI and carry ci/gpu_wheels"
# sizes only: enough to catch a carry that stopped part-way, and instant
while read -r _ size file; do
  [ "$(stat -c %s "$WHEELS/$file" 2>/dev/null)" = "$size" ] \
    || die "ci/gpu_wheels/$file is missing or not the size MANIFEST says: run 'bash ci/gpu_check.sh --prepare' again and carry ci/gpu_wheels"
done <"$WHEELS/MANIFEST"
command -v "$PY" >/dev/null 2>&1 || die "no '$PY' on PATH (set GPU_CHECK_PYTHON to the Python that has torch)"
"$PY" -c 'import torch' 2>/dev/null || die "$PY cannot import torch (set GPU_CHECK_PYTHON to the Python that has torch)"
if [ "$mode" = gpu ]; then
  "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null \
    || die "torch sees no CUDA GPU here; 'bash ci/gpu_check.sh --dry-run' rehearses the check on CPU"
fi
# what the GPU image is expected to bring itself (too large to carry: opencv's wheel alone is about 50 MB);
# tensorboard: the e2e test below trains with --tensorboard
missing=$("$PY" -c '
import importlib.util
print(" ".join(m for m in ("torchvision", "numpy", "PIL", "cv2", "matplotlib", "yaml", "packaging", "pytest",
                         "tensorboard")
               if importlib.util.find_spec(m) is None))')
[ -z "$missing" ] || die "$PY lacks $missing, which ci/gpu_wheels does not carry; add their cp312 wheels to ci/gpu_wheels"

RES=${OUT:-$ROOT/bench_output/gpu_check}
RUNS=$ROOT/bench_output/gpu_check/runs
rm -rf "$RUNS"
mkdir -p "$RES" "$RUNS" || die "cannot create $RES"
exec > >(tee "$RES/gpu_check.log") 2>&1
tee_pid=$!
t_start=$SECONDS

# per mode: device, AMP flag, per-epoch steps and batch of each speed row, total time budget (s)
if [ "$mode" = gpu ]; then
  dev=gpu amp=--amp steps16=400 bs_big=512 steps_big=40 epochs=2 resume_bs=64 budget=450
  noise_train=20480 noise_test=1024
else
  # fp32: CPU autocast is bfloat16, 98 s a step at batch 4 on CPUs without native bf16
  dev=cpu amp=--no-amp steps16=2 bs_big=8 steps_big=2 epochs=1 resume_bs=4 budget=900
  noise_train=128 noise_test=16
fi
deadline=$((SECONDS + ${GPU_CHECK_BUDGET_S:-$budget}))
# limit CAP: CAP seconds or what is left of the budget, so a hung step still leaves time for the table
limit() { local left=$((deadline - SECONDS)); [ "$left" -gt 1 ] || left=1; echo $(("$1" < left ? "$1" : left)); }
# show RUN.out: the banner or summary when it worked, more of it when it did not
show() { if [ "$2" = 0 ]; then tail -n "$3" "$1"; else tail -n 40 "$1"; echo "(exit status $2)"; fi; }

echo "== gpu_check ($mode): installing ci/gpu_wheels into ci/gpu_site"
rm -rf "$SITE"
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
  --target "$SITE" "$WHEELS"/*.whl || die "pip could not install ci/gpu_wheels into ci/gpu_site"
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
MZ_PYTHON=$(command -v "$PY")
export MZ_PYTHON MPLBACKEND=Agg PYTHONUNBUFFERED=1
# the recipe caches what its CPU probes chose under ~/.cache by default; the check writes only inside the clone
export MODELZOO_TUNE_CACHE=${MODELZOO_TUNE_CACHE:-$ROOT/bench_output/gpu_check/cputune}
"$PY" -W ignore -c 'import torch, torchvision, mmcv, mmcls; print("torch", torch.__version__, "torchvision",
torchvision.__version__, "mmcv", mmcv.__version__, "mmcls", mmcls.__version__)' 2>"$RUNS/import.err" \
  || { tail -n 5 "$RUNS/import.err"; die "mmcv/mmcls from ci/gpu_site do not import under $PY"; }

echo "== gpu_check: data"
# the tests read data/digits; the speed runs read noise of the real shape, enough of it for 40 steps of
# 512 in one epoch (the 1,497 digits give 3 steps an epoch at batch 512, each one restarting the loader)
if [ ! -f "$ROOT/data/digits/cifar-100-python/train" ]; then
  mkdir -p "$ROOT/data/digits" && cp -r "$WHEELS/digits/cifar-100-python" "$ROOT/data/digits/" \
    || die "cannot copy the digits into data/digits"
fi
NOISE=$ROOT/data/gpu_check_noise
"$PY" "$ROOT/ci/make_data.py" --noise --formats cifar100 --n_train "$noise_train" --n_test "$noise_test" \
  --out "$NOISE" || die "ci/make_data.py --noise failed"

# channels-last where tools/train.py has --memory-format (it is new: an older tree runs NCHW alone)
has_fmt=""
grep -q -- '"--memory-format"' "$RECIPE/tools/train.py" && has_fmt=yes

perf() {  # perf NAME BATCH STEPS FORMAT: the recipe's own performance script, 1 device
  local name=$1 bs=$2 steps=$3 fmt=$4 rc
  echo "== gpu_check: $name: test/train_performance_1p.sh --batch_size=$bs ($dev, $amp, $fmt, $epochs x $steps steps)"
  timeout -k 10 "$(limit 150)" bash "$RECIPE/test/train_performance_1p.sh" --data_path="$NOISE" \
    --output_path="$RUNS/$name" --device="$dev" --batch_size="$bs" --train_epochs="$epochs" \
    --train_steps="$steps" --seed=0 "$amp" ${has_fmt:+"--memory-format=$fmt"} >"$RUNS/$name.out" 2>&1
  rc=$?
  show "$RUNS/$name.out" "$rc" 5
  echo "$rc" >"$RUNS/$name.rc"
}
rows=("bs16:16:contiguous:16:$ORIG_BS16" "bs$bs_big:$bs_big:contiguous:512:$ORIG_BS512")
perf bs16 16 "$steps16" contiguous
perf "bs$bs_big" "$bs_big" "$steps_big" contiguous
if [ -n "$has_fmt" ]; then
  perf "bs${bs_big}_cl" "$bs_big" "$steps_big" channels_last
  rows+=("bs${bs_big}_cl:$bs_big:channels_last:512:$ORIG_BS512")
fi

# The recipe's tests all train on CPU (their conftest pins --device cpu), so resuming on CUDA (optimiser
# momentum and GradScaler state back on the device) is checked here through the real entry point; NCHW
# named, so that on CPU the recipe's memory-format probe does not run inside it.
echo "== gpu_check: resume on $dev: 1 epoch, then --resume=auto to 2 epochs"
resume_rc=0
for ep in 1 2; do
  timeout -k 10 "$(limit 120)" bash "$RECIPE/test/train_performance_1p.sh" --data_path="$NOISE" \
    --output_path="$RUNS/resume" --device="$dev" --batch_size="$resume_bs" --train_epochs="$ep" --train_steps=2 \
    --seed=0 "$amp" --resume=auto ${has_fmt:+--memory-format=contiguous} >"$RUNS/resume_$ep.out" 2>&1 \
    || { resume_rc=$?; break; }
done
if [ "$resume_rc" = 0 ] && { ! grep -q "resumed from .*epoch_1.pth: epoch 1, iter 2" "$RUNS/resume_2.out" ||
                             [ ! -f "$RUNS/resume/epoch_2.pth" ]; }; then
  resume_rc=1
  echo "the second run did not resume from epoch_1.pth and write epoch_2.pth"
fi
show "$RUNS/resume_$ep.out" "$resume_rc" 0
grep -h "resumed from" "$RUNS/resume_2.out" 2>/dev/null | sed 's/.* - INFO - //'
echo "$resume_rc" >"$RUNS/resume.rc"

# model build (and NHWC = NCHW numerics where that test exists), a short training through the perf script,
# SIGKILL + resume; all on CPU (see above): they show the carried mmcv/mmcls working under this machine's
# Python and torch. -k rather than node ids, so a test not in this tree is left out instead of failing.
TEST_FILES=(tests/test_model.py tests/test_e2e.py tests/test_reliability.py)
TEST_K="parameter_count or cifar_stem or every_config or channels_last_model or banner_and_run_record or sigkill_mid"
echo "== gpu_check: recipe tests: ${TEST_FILES[*]} -k '$TEST_K'"
(cd "$RECIPE" && timeout -k 10 "$(limit 240)" "$PY" -m pytest -q -p no:cacheprovider "${TEST_FILES[@]}" \
   -k "$TEST_K") >"$RUNS/tests.out" 2>&1
tests_rc=$?
show "$RUNS/tests.out" "$tests_rc" 1
echo "$tests_rc" >"$RUNS/tests.rc"

# -- the table --------------------------------------------------------------------------------------
rm -f "$RUNS"/*/*.pth  # 95 MB each, and nothing reads them after this point
echo
"$PY" "$ROOT/ci/gpu_check_report.py" --mode "$mode" --runs "$RUNS" --out "$RES/gpu_check.json" \
  "${rows[@]/#/--row=}" --amp="$amp" --tests="${TEST_FILES[*]} -k $TEST_K" \
  --wall "$((SECONDS - t_start))"
rc=$?
# let tee finish the log before a device runner collects $OUT
exec >&- 2>&-
wait "$tee_pid" 2>/dev/null
exit "$rc"
