#!/usr/bin/env bash
# Train a list of GANs: one sbatch job each when SLURM is present, one after
# another on this machine with --local or without sbatch.
#
#   bash run_training_all.sh [--local] [--preset cpu|paper] [--root DIR] [MODEL ...]
#
# Models default to all eight GANs of the zoo (models/zoo.py). Extra options after -- go to train.py.
# Extra sbatch options (partition, --gres, time) come from $SBATCH_ARGS.
set -euo pipefail
source "$(dirname "$0")/scripts/common.sh"

LOCAL=0 PRESET=paper ROOT=experiment MODELS=() EXTRA=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --local) LOCAL=1 ;;
        --preset) PRESET="$2"; shift ;;
        --root) ROOT="$2"; shift ;;
        --) shift; EXTRA=("$@"); break ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        -*) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) MODELS+=("$1") ;;
    esac
    shift
done
if [[ ${#MODELS[@]} -eq 0 ]]; then
    read -r -a MODELS <<< "$(cd "$repo_dir" && "$PYTHON" -c 'from models import model_names; print(*model_names())')"
fi

for model in "${MODELS[@]}"; do
    submit_or_run "train-$model" "$ROOT/logs" \
        "$PYTHON" "$repo_dir/train.py" --model "$model" --preset "$PRESET" --root "$ROOT" "${EXTRA[@]}"
done
