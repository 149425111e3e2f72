#!/usr/bin/env bash
# Body of every SLURM job that the run_*.sh scripts submit:
#
#   sbatch [options] scripts/slurm_job.sh REPO_DIR SETUP -- COMMAND...
#
# Runs SETUP (shell commands that load modules or activate an environment;
# may be empty) and then COMMAND in REPO_DIR. sbatch runs a copy of this file
# from its spool folder, so the repository folder comes as an argument.
# The job ends with COMMAND's exit status.
set -euo pipefail

if [[ $# -lt 4 || "$3" != "--" ]]; then
    echo "usage: slurm_job.sh REPO_DIR SETUP -- COMMAND..." >&2
    exit 2
fi
repo="$1" setup="$2"
shift 3

task=""
if [[ -n "${SLURM_ARRAY_TASK_ID:-}" ]]; then
    task=" (array ${SLURM_ARRAY_JOB_ID:-?} task $SLURM_ARRAY_TASK_ID of ${SLURM_ARRAY_TASK_COUNT:-?})"
fi
echo "=== job ${SLURM_JOB_ID:-?} ${SLURM_JOB_NAME:-}$task on $(hostname), start $(date '+%F %T')," \
     "restart ${SLURM_RESTART_COUNT:-0}"
echo "=== command: $*"
# TensorFlow starts a thread per core of the node by default. Unless the
# caller set a count, its kernels get as many threads as the job has CPUs.
if [[ -n "${SLURM_CPUS_PER_TASK:-}" && -z "${TF_NUM_INTRAOP_THREADS:-}" ]]; then
    export TF_NUM_INTRAOP_THREADS="$SLURM_CPUS_PER_TASK"
fi
cd "$repo"
if [[ -n "$setup" ]]; then
    echo "=== setup: $setup"
    eval "$setup"
fi

status=0
"$@" || status=$?
echo "=== job ${SLURM_JOB_ID:-?} end $(date '+%F %T'), exit status $status"
exit "$status"
