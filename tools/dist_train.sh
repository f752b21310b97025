#!/usr/bin/env bash
# tools/dist_train.sh CONFIG GPUS [train.py arguments]
# Trains on GPUS GPUs of this node (or GPUS CPU processes without a GPU); multi-node with
# NNODES, NODE_RANK, PORT and MASTER_ADDR (see dist_launch.sh).
[[ "${1:-}" == -h || "${1:-}" == --help ]] && { sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit 0; }
exec "$(dirname "$0")/dist_launch.sh" train.py "$2" "$1" "${@:3}"
