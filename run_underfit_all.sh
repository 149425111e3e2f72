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

LOCAL=0 DRY_RUN=0 CONFIG="" ROOT="" AFTER="" MODELS=() EXTRA=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --local) LOCAL=1 ;;
        --dry-run) DRY_RUN=1 ;;
        --config) CONFIG="$2"; shift ;;
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
    underfit_job "$model" "$AFTER" "$ROOT" "${EXTRA[@]}"
done
print_slurm_summary
