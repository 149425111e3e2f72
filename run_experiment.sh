#!/usr/bin/env bash
# Run the whole study on this machine, stage after stage:
# download (if the data folder is missing) -> split -> convert -> train ->
# complete -> image database -> embeddings -> compare -> underfit -> analyze.
#
#   bash run_experiment.sh --local --data DIR [--root DIR] [--preset cpu|paper]
#                          [--models "dcgan wgan-gp"] [--seed N]
#
# Every stage resumes or skips work that is already done, so rerunning after
# a kill continues where it stopped.
set -euo pipefail
source "$(dirname "$0")/scripts/common.sh"

LOCAL=0 DATA=data/img_align_celeba ROOT=experiment PRESET=cpu MODELS="dcgan wgan-gp" SEED=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --local) LOCAL=1 ;;
        --data) DATA="$2"; shift ;;
        --root) ROOT="$2"; shift ;;
        --preset) PRESET="$2"; shift ;;
        --models) MODELS="$2"; shift ;;
        --seed) SEED="$2"; shift ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [[ "$LOCAL" != "1" ]] && command -v sbatch >/dev/null 2>&1; then
    # NOTE: on SLURM, submit the training and completion stages with
    # run_training_all.sh and run_completion_all.sh; this chain runs locally.
    echo "error: run_experiment.sh runs the chain on this machine; pass --local" >&2
    exit 2
fi
read -r -a MODEL_LIST <<< "$MODELS"
PY=("$PYTHON")
started=$(date +%s)
stage() {
    local name="$1"; shift
    local t0; t0=$(date +%s)
    echo "==> $name"
    "$@"
    echo "<== $name done in $(( $(date +%s) - t0 )) s"
}

if [[ ! -d "$DATA" ]]; then
    stage download "${PY[@]}" "$repo_dir/download.py" --out "$(dirname "$DATA")"
fi
stage split "${PY[@]}" "$repo_dir/split_train_test.py" --data "$DATA" --root "$ROOT" --preset "$PRESET" --seed "$SEED" --no-progress
stage convert "${PY[@]}" "$repo_dir/convert.py" --root "$ROOT" --no-progress
stage train bash "$repo_dir/run_training_all.sh" --local --preset "$PRESET" --root "$ROOT" "${MODEL_LIST[@]}" -- --seed "$SEED" --no-progress
stage complete bash "$repo_dir/run_completion_all.sh" --local --preset "$PRESET" --root "$ROOT" "${MODEL_LIST[@]}" -- --seed "$SEED" --no-progress
stage imagesdb "${PY[@]}" "$repo_dir/split_train_test.py" --db --root "$ROOT"
stage embed-train "${PY[@]}" "$repo_dir/facenet/calculate_embeddings.py" --root "$ROOT" --src train --no-progress
stage embed-test "${PY[@]}" "$repo_dir/facenet/calculate_embeddings.py" --root "$ROOT" --src test --no-progress
for model in "${MODEL_LIST[@]}"; do
    stage "embed-inpaint-$model" "${PY[@]}" "$repo_dir/facenet/calculate_embeddings.py" --root "$ROOT" --src inpaint --gan "$model" --no-progress
done
stage compare "${PY[@]}" "$repo_dir/facenet/gans_compare.py" --root "$ROOT"
for model in "${MODEL_LIST[@]}"; do
    stage "underfit-$model" "${PY[@]}" "$repo_dir/underfit.py" --root "$ROOT" --model "$model" --no-progress
done
stage analyze "${PY[@]}" "$repo_dir/analyze.py" --root "$ROOT"

echo
echo "Experiment finished in $(( $(date +%s) - started )) s. Results in $ROOT:"
echo "  figures:           $ROOT/figures/sim_distances.png, $ROOT/figures/joint_bar.png"
echo "  summary table:     $ROOT/results/summary.csv"
echo "  cosine distances:  $ROOT/gan_distances.csv"
echo "  generalization:    $ROOT/underfit/<model>/underfit.csv and mosaics"
echo "  sample grids:      $ROOT/checkpoints/<model>/samples/"
