#!/usr/bin/env bash
# Measure the generalization gap (underfit.py) of a list of GANs: one sbatch
# job each when SLURM is present, one after another on this machine with
# --local or without sbatch. Needs the train, test and inpainting embeddings
# (facenet/calculate_embeddings.py).
#
#   bash run_underfit_all.sh [--local | --dry-run] [--config FILE] [--root DIR]
#                            [--after JOBID[:JOBID...]] [MODEL ...] [-- UNDERFIT_ARGS]
#
# Models default to all eight GANs of the zoo (models/zoo.py). Options after
# -- go to underfit.py. --dry-run prints the sbatch commands without
# submitting; --after makes every job wait for those jobs. Cluster settings:
# see slurm/cluster.conf.example.
set -euo pipefail
source "$(dirname "$0")/scripts/common.sh"

parse_stage_options "$0" "" "$@"
prepare_stage

for model in "${MODELS[@]}"; do
    underfit_job "$model" "$AFTER" "$ROOT" "${EXTRA[@]}"
done
print_slurm_summary
