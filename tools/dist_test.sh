#!/usr/bin/env bash
# tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py arguments]
# Tests on GPUS GPUs of this node (or GPUS CPU processes without a GPU); multi-node with
# NNODES, NODE_RANK, PORT and MASTER_ADDR (see dist_launch.sh).
exec "$(dirname "$0")/dist_launch.sh" test.py "$3" "$1" "$2" "${@:4}"
