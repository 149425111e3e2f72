#!/usr/bin/env bash
# Train a list of GANs: one sbatch job each when SLURM is present, one after
# another on this machine with --local or without sbatch.
#
#   bash run_training_all.sh [--local | --dry-run] [--config FILE] [--preset cpu|paper]
#                            [--root DIR] [--after JOBID[:JOBID...]] [MODEL ...] [-- TRAIN_ARGS]
#
# Models default to all eight GANs of the zoo (models/zoo.py). Options after
# -- go to train.py. --dry-run prints the sbatch commands without submitting;
# --after makes every job wait for those jobs to end successfully. Cluster
# settings (partition, GPUs, time limit, environment set-up) come from the
# environment or a config file: see slurm/cluster.conf.example.
set -euo pipefail
source "$(dirname "$0")/scripts/common.sh"

parse_stage_options "$0" "preset" "$@"
prepare_stage

for model in "${MODELS[@]}"; do
    train_job "$model" "$AFTER" "$PRESET" "$ROOT" "${EXTRA[@]}"
done
print_slurm_summary
