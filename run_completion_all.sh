#!/usr/bin/env bash
# Inpaint the test images with a list of trained GANs: one sbatch job array
# per GAN when SLURM is present, one model after another on this machine with
# --local or without sbatch.
#
#   bash run_completion_all.sh [--local | --dry-run] [--config FILE] [--preset cpu|paper]
#                              [--root DIR] [--tasks N] [--after JOBID[:JOBID...]]
#                              [MODEL ...] [-- COMPLETE_ARGS]
#
# Models default to all eight GANs of the zoo (models/zoo.py). Options after
# -- go to complete.py (for example -- --maskType left --clipping standard).
# --tasks N (default: CLUSTER_INPAINT_TASKS, else 1) splits the test images
# into N ranges, one array task each. A local run does the N ranges in turn.
# --dry-run prints the sbatch commands without submitting; --after makes every
# job wait for those jobs. Cluster settings: see slurm/cluster.conf.example.
set -euo pipefail
source "$(dirname "$0")/scripts/common.sh"

parse_stage_options "$0" "preset tasks" "$@"
prepare_stage

for model in "${MODELS[@]}"; do
    complete_jobs "$model" "$AFTER" "$CLUSTER_INPAINT_TASKS" "$PRESET" "$ROOT" "${EXTRA[@]}"
done
print_slurm_summary
