#!/usr/bin/env bash
# tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py arguments]
# Trains on a Slurm partition, one task per GPU: GPUS (default 8), GPUS_PER_NODE, CPUS_PER_TASK,
# GRES (GRES=none without GPUs) and SRUN_ARGS as slurm_launch.sh says. Run inside an sbatch job
# (README, "Slurm") to be requeued and resumed after preemption or a time limit.
[[ "${1:-}" == -h || "${1:-}" == --help ]] && { sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit 0; }
exec "$(dirname "$0")/slurm_launch.sh" train.py "$1" "$2" "$3" --work-dir "$4" "${@:5}"
