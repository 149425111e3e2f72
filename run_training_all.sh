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

LOCAL=0 DRY_RUN=0 CONFIG="" PRESET=paper ROOT="" AFTER="" MODELS=() EXTRA=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --local) LOCAL=1 ;;
        --dry-run) DRY_RUN=1 ;;
        --config) CONFIG="$2"; shift ;;
        --preset) PRESET="$2"; shift ;;
        --root) ROOT="$2"; shift ;;
        --after) AFTER="$2"; shift ;;
        --) shift; EXTRA=("$@"); break ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        -*) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) MODELS+=("$1") ;;
    esac
    shift
done
set_mode "$LOCAL" "$DRY_RUN"
load_cluster_config "$CONFIG"
ROOT="${ROOT:-${CLUSTER_ROOT:-experiment}}"
if [[ "$MODE" != local ]]; then
    ROOT="$(absolute_path "$ROOT")"
    EXTRA+=(--no-progress)
fi
LOG_DIR="$ROOT/logs"
if [[ ${#MODELS[@]} -eq 0 ]]; then
    read -r -a MODELS <<< "$(cd "$repo_dir" && "$PYTHON" -c 'from models import model_names; print(*model_names())')"
fi

for model in "${MODELS[@]}"; do
    train_job "$model" "$AFTER" "$PRESET" "$ROOT" "${EXTRA[@]}"
done
print_slurm_summary
