#!/usr/bin/env bash
# mmcls' dist_train.sh: CONFIG on N local processes through torchrun, seed 0, --launcher pytorch.
#   usage: tools/dist_train.sh CONFIG N [train.py args...]
# NNODES, NODE_RANK, MASTER_ADDR and PORT come from the environment as upstream; extra arguments go to train.py.
# MAX_RESTARTS=N (default 0): torchrun restarts the workers after a failure up to N times; the restarted workers
# resume from their newest common checkpoint (tools/train.py implies --resume auto in them).
tools_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$tools_dir/../../common/sh/env.sh" torch || exit 2
case "${1:-}" in -h|--help) mz_usage ;; esac
if [ $# -lt 2 ]; then echo "usage: $0 CONFIG N [train.py args...]" >&2; exit 2; fi
CONFIG=$1
NPROC=$2
shift 2
exec "$MZ_PYTHON" -m torch.distributed.run --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${PORT:-29500}" --nproc_per_node="$NPROC" \
  --max-restarts="${MAX_RESTARTS:-0}" "$tools_dir/train.py" "$CONFIG" --seed 0 --launcher pytorch "$@"
