#!/usr/bin/env bash
# tools/slurm_launch.sh SCRIPT PARTITION JOB_NAME [SCRIPT arguments]: runs tools/SCRIPT as one
# Slurm task per GPU with srun (used by slurm_train.sh and slurm_test.sh), with
#   GPUS            tasks in all (default 8)
#   GPUS_PER_NODE   tasks per node (default 8, or GPUS when fewer)
#   CPUS_PER_TASK   CPUs of each task (default 5)
#   GRES            generic resources per node (default gpu:GPUS_PER_NODE); GRES=none on nodes
#                   without GPUs: each task then runs on CPUS_PER_TASK CPUs over gloo
#   SRUN_ARGS       further srun options (e.g. "--time=24:00:00 --signal=USR1@300")
# Inside an sbatch allocation srun starts a step of that job. Each task gets MASTER_PORT
# 20000 + job id mod 10000 unless MASTER_PORT is set, so that jobs sharing a node do not all
# take 29500. The Python: the activated virtual environment's, else this checkout's .venv, else
# `python`.
[[ "${1:-}" == -h || "${1:-}" == --help ]] && { sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit 0; }
set -euo pipefail
SCRIPT=$1
PARTITION=$2
JOB_NAME=$3
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-$((GPUS < 8 ? GPUS : 8))}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
GRES=${GRES:-gpu:$GPUS_PER_NODE}
source "$(dirname "$0")/python.sh"  # HERE (this folder) and PYTHON
export PYTHONPATH="$HERE/..${PYTHONPATH:+:$PYTHONPATH}"
# shellcheck disable=SC2086  # SRUN_ARGS is a list of options
exec srun --partition="$PARTITION" --job-name="$JOB_NAME" --gres="$GRES" --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" --cpus-per-task="$CPUS_PER_TASK" --kill-on-bad-exit=1 ${SRUN_ARGS:-} \
    bash -c 'export MASTER_PORT=${MASTER_PORT:-$((20000 + SLURM_JOB_ID % 10000))}; exec "$@"' slurm_task \
    "$PYTHON" -u "$HERE/$SCRIPT" "${@:4}" --launcher slurm
