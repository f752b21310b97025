#!/usr/bin/env bash
# tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py arguments]
# Evaluates CHECKPOINT on a Slurm partition, one task per GPU: GPUS (default 8), GPUS_PER_NODE,
# CPUS_PER_TASK, GRES (GRES=none without GPUs) and SRUN_ARGS as slurm_launch.sh says.
[[ "${1:-}" == -h || "${1:-}" == --help ]] && { sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit 0; }
exec "$(dirname "$0")/slurm_launch.sh" test.py "$1" "$2" "$3" "$4" "${@:5}"
