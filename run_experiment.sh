#!/usr/bin/env bash
# Run the whole study, stage after stage:
# download (if the data folder is missing) -> split -> convert -> train ->
# complete -> image database -> embeddings -> compare -> underfit -> analyze.
#
#   bash run_experiment.sh [--local | --dry-run] --data DIR [--root DIR]
#                          [--preset cpu|paper] [--models "dcgan wgan-gp"] [--seed N]
#                          [--config FILE] [--inpaint-tasks N]
#
# With sbatch on the PATH and no --local, every stage becomes SLURM jobs,
# each waiting for the jobs whose outputs it reads (sbatch --dependency).
# The script prints their ids and ends. The cluster settings come from the
# environment or a config file (slurm/cluster.conf.example). --dry-run prints
# those sbatch commands without submitting. With --local, or without sbatch,
# the stages run here one after another. --inpaint-tasks N (default:
# CLUSTER_INPAINT_TASKS, else 1) splits each model's inpainting into N ranges
# of test images: N array tasks on SLURM, N runs in turn here.
#
# Every stage resumes or skips work that is already done, so rerunning after
# a kill, a preemption or a failed job continues where it stopped.
set -euo pipefail
source "$(dirname "$0")/scripts/common.sh"

LOCAL=0 DRY_RUN=0 CONFIG="" TASKS="" DATA=data/img_align_celeba ROOT="" PRESET=cpu MODELS="dcgan wgan-gp" SEED=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --local) LOCAL=1 ;;
        --dry-run) DRY_RUN=1 ;;
        --config) CONFIG="$2"; shift ;;
        --inpaint-tasks) TASKS="$2"; shift ;;
        --data) DATA="$2"; shift ;;
        --root) ROOT="$2"; shift ;;
        --preset) PRESET="$2"; shift ;;
        --models) MODELS="$2"; shift ;;
        --seed) SEED="$2"; shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
set_mode "$LOCAL" "$DRY_RUN"
if [[ -z "${MODELS// /}" ]]; then
    echo "error: --models is empty; give at least one model name, e.g. --models \"dcgan wgan-gp\"" >&2
    exit 2
fi
if [[ -n "$TASKS" ]]; then
    CLUSTER_INPAINT_TASKS="$TASKS"
fi
load_cluster_config "$CONFIG"
ROOT="${ROOT:-${CLUSTER_ROOT:-experiment}}"
# Passed on to run_training_all.sh and run_completion_all.sh in a local run.
CONFIG_OPTION=()
if [[ -n "$CONFIG" ]]; then
    CONFIG_OPTION=(--config "$CONFIG")
fi

# submit_study: submit every stage as SLURM jobs (or print them with
# --dry-run). The arguments of each stage match the local chain below; keep
# the two in step.
submit_study() {
    local models=() model py
    read -r -a models <<< "$MODELS"
    ROOT="$(absolute_path "$ROOT")"
    DATA="$(absolute_path "$DATA")"
    LOG_DIR="$ROOT/logs"
    py=$(job_python)
    if [[ ! -d "$DATA" ]]; then
        # Compute nodes often have no internet access, so the download runs here.
        if [[ "$MODE" == dry-run ]]; then
            echo "# $DATA is missing: a real run first downloads CelebA here with download.py"
        else
            echo "==> download to $(dirname "$DATA") on this machine, before submitting"
            # download.py prints the folder the archive extracted to, which
            # may be named differently from the missing --data folder.
            DATA="$("$PYTHON" "$repo_dir/download.py" --out "$(dirname "$DATA")" --no-progress | tail -n 1)"
        fi
    fi

    submit_job split "" "" -- "$py" "$repo_dir/split_train_test.py" --data "$DATA" --root "$ROOT" \
        --preset "$PRESET" --seed "$SEED" --no-progress
    submit_job convert "" "$(dependency_list split)" -- "$py" "$repo_dir/convert.py" --root "$ROOT" --no-progress
    local prepared
    prepared=$(dependency_list convert)
    # The train and test embeddings need only the split and the preprocessing,
    # so they run while the GANs train.
    submit_job embed train "$prepared" -- "$py" "$repo_dir/facenet/calculate_embeddings.py" \
        --root "$ROOT" --src train --no-progress
    submit_job embed test "$prepared" -- "$py" "$repo_dir/facenet/calculate_embeddings.py" \
        --root "$ROOT" --src test --no-progress

    local completed=()
    for model in "${models[@]}"; do
        train_job "$model" "$prepared" "$PRESET" "$ROOT" --seed "$SEED" --no-progress
        complete_jobs "$model" "$(dependency_list "train-$model")" "$CLUSTER_INPAINT_TASKS" \
            "$PRESET" "$ROOT" --seed "$SEED" --no-progress
        completed+=("complete-$model-done")
    done
    submit_job imagesdb "" "$(dependency_list "${completed[@]}")" -- "$py" \
        "$repo_dir/split_train_test.py" --db --root "$ROOT"
    for model in "${models[@]}"; do
        submit_job embed "inpaint-$model" "$(dependency_list "complete-$model")" -- "$py" \
            "$repo_dir/facenet/calculate_embeddings.py" --root "$ROOT" --src inpaint --gan "$model" --no-progress
    done
    submit_job compare "" "$(dependency_list imagesdb)" -- "$py" "$repo_dir/facenet/gans_compare.py" --root "$ROOT"

    local measured=(compare "${completed[@]}")
    for model in "${models[@]}"; do
        underfit_job "$model" "$(dependency_list embed-train embed-test "embed-inpaint-$model")" "$ROOT" --no-progress
        measured+=("underfit-$model")
    done
    # The baselines read the completions' mask.png, so they wait for the inpainting too.
    submit_job underfit baselines "$(dependency_list embed-train embed-test "${completed[@]}")" -- "$py" \
        "$repo_dir/underfit.py" --root "$ROOT" --model none --baselines --no-progress
    measured+=(underfit-baselines)
    submit_job analyze "" "$(dependency_list "${measured[@]}")" -- "$py" "$repo_dir/analyze.py" --root "$ROOT"

    print_slurm_summary
    if [[ "$MODE" == slurm ]]; then
        echo "  results: $ROOT/results and $ROOT/figures once job analyze (${JOB_IDS[analyze]}) has ended"
    fi
}

if [[ "$MODE" != local ]]; then
    submit_study
    exit 0
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
    echo "==> download to $(dirname "$DATA")"
    DATA="$("${PY[@]}" "$repo_dir/download.py" --out "$(dirname "$DATA")" --no-progress | tail -n 1)"
    echo "<== download: images in $DATA"
fi
stage split "${PY[@]}" "$repo_dir/split_train_test.py" --data "$DATA" --root "$ROOT" --preset "$PRESET" --seed "$SEED" --no-progress
stage convert "${PY[@]}" "$repo_dir/convert.py" --root "$ROOT" --no-progress
stage train bash "$repo_dir/run_training_all.sh" --local "${CONFIG_OPTION[@]}" --preset "$PRESET" --root "$ROOT" "${MODEL_LIST[@]}" -- --seed "$SEED" --no-progress
stage complete bash "$repo_dir/run_completion_all.sh" --local "${CONFIG_OPTION[@]}" --tasks "$CLUSTER_INPAINT_TASKS" --preset "$PRESET" --root "$ROOT" "${MODEL_LIST[@]}" -- --seed "$SEED" --no-progress
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
# Reference inpainters (the test image itself, copies of the nearest training image) on the same test images.
stage underfit-baselines "${PY[@]}" "$repo_dir/underfit.py" --root "$ROOT" --model none --baselines --no-progress
# Figures and tables with the baselines as their own bars, and report/index.html.
stage analyze "${PY[@]}" "$repo_dir/analyze.py" --root "$ROOT"

echo
echo "Experiment finished in $(( $(date +%s) - started )) s. Results in $ROOT:"
echo "  figures:           $ROOT/figures/sim_distances.png, $ROOT/figures/joint_bar.png"
echo "  report:            $ROOT/report/index.html (open it from disk)"
echo "  summary table:     $ROOT/results/summary.csv, pairwise tests in $ROOT/results/pairwise.csv"
echo "  cosine distances:  $ROOT/gan_distances.csv"
echo "  generalization:    $ROOT/underfit/<model>/underfit.csv and mosaics"
echo "  sample grids:      $ROOT/checkpoints/<model>/samples/"
