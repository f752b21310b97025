#!/usr/bin/env bash
# tools/dist_launch.sh SCRIPT NPROC [SCRIPT arguments]: runs tools/SCRIPT in NPROC processes per
# node with torchrun (used by dist_train.sh and dist_test.sh). Multi-node: set NNODES, NODE_RANK,
# PORT and MASTER_ADDR. Without a GPU the processes run on the CPU over gloo.
# The Python: the activated virtual environment's, else this checkout's .venv, else `python`.
[[ "${1:-}" == -h || "${1:-}" == --help ]] && { sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit 0; }
set -euo pipefail
SCRIPT=$1
NPROC=$2
source "$(dirname "$0")/python.sh"  # HERE (this folder) and PYTHON
exec "$PYTHON" -m torch.distributed.run --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${PORT:-29500}" --nproc_per_node="$NPROC" \
    "$HERE/$SCRIPT" "${@:3}" --launcher pytorch
