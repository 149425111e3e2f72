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

LOCAL=0 DRY_RUN=0 CONFIG="" PRESET=paper ROOT="" TASKS="" AFTER="" MODELS=() EXTRA=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --local) LOCAL=1 ;;
        --dry-run) DRY_RUN=1 ;;
        --config) CONFIG="$2"; shift ;;
        --preset) PRESET="$2"; shift ;;
        --root) ROOT="$2"; shift ;;
        --tasks) TASKS="$2"; shift ;;
        --after) AFTER="$2"; shift ;;
        --) shift; EXTRA=("$@"); break ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        -*) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) MODELS+=("$1") ;;
    esac
    shift
done
set_mode "$LOCAL" "$DRY_RUN"
if [[ -n "$TASKS" ]]; then
    CLUSTER_INPAINT_TASKS="$TASKS"
fi
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
    complete_jobs "$model" "$AFTER" "$CLUSTER_INPAINT_TASKS" "$PRESET" "$ROOT" "${EXTRA[@]}"
done
print_slurm_summary
