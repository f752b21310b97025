#!/usr/bin/env bash
# tools/dist_train.sh CONFIG GPUS [train.py arguments]
# Runs tools/train.py in GPUS processes with torchrun. Multi-node: set NNODES, NODE_RANK, PORT
# and MASTER_ADDR. Without a GPU the processes train on the CPU over gloo.
set -euo pipefail
CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
HERE=$(cd "$(dirname "$0")" && pwd)
PYTHON=$( [[ -x "$HERE/../.venv/bin/python" ]] && echo "$HERE/../.venv/bin/python" || echo python)
exec "$PYTHON" -m torch.distributed.run --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" --master_port="$PORT" "$HERE/train.py" "$CONFIG" --launcher pytorch "${@:3}"
