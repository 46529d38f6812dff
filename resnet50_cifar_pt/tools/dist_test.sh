#!/usr/bin/env bash
# mmcls' dist_test.sh: evaluate CHECKPOINT on N local processes through torchrun (--launcher pytorch; gloo on
# CPU, nccl on GPU). Rank 0 prints the metrics and writes --out; the per-image results are the 1-process ones.
#   usage: tools/dist_test.sh CONFIG CHECKPOINT N [test.py args...]
# NNODES, NODE_RANK, MASTER_ADDR and PORT come from the environment as upstream (defaults 1, 0, 127.0.0.1,
# 29500); extra arguments go to tools/test.py (--device cpu, --out F.json, --gpu-collect, --tmpdir DIR, ...).
tools_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$tools_dir/../../common/sh/env.sh" torch || exit 2
case "${1:-}" in -h|--help) mz_usage ;; esac
if [ $# -lt 3 ]; then echo "usage: $0 CONFIG CHECKPOINT N [test.py args...]" >&2; exit 2; fi
CONFIG=$1
CHECKPOINT=$2
NPROC=$3
shift 3
if ! [[ "$NPROC" =~ ^[1-9][0-9]*$ ]]; then echo "ERROR: N (processes per node) must be a positive integer, got '$NPROC'" >&2; exit 2; fi
exec "$MZ_PYTHON" -m torch.distributed.run --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${PORT:-29500}" --nproc_per_node="$NPROC" \
  "$tools_dir/test.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "$@"
