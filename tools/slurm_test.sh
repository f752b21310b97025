#!/usr/bin/env bash
# tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py arguments]
# Evaluates CHECKPOINT on a Slurm partition, one task per GPU: GPUS (default 8), GPUS_PER_NODE,
# CPUS_PER_TASK, GRES (GRES=none without GPUs) and SRUN_ARGS as slurm_launch.sh says.
exec "$(dirname "$0")/slurm_launch.sh" test.py "$1" "$2" "$3" "$4" "${@:5}"
