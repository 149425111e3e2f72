# shellcheck shell=bash
# Shared helpers for the run_*.sh scripts; sourced, not executed.
#
# A script picks a mode with set_mode and then hands each step to
# submit_job, which does one of three things:
#   local    run the step now, on this machine, and stop on failure
#   slurm    submit it with sbatch, after the jobs it depends on
#   dry-run  print the sbatch command as a line of shell, submit nothing
# Cluster settings come from the environment or a config file (see
# slurm/cluster.conf.example); load_cluster_config reads them.

# The Python to use: $PYTHON, else the project's .venv, else python3.
repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$repo_dir/.venv/bin/python" ]]; then
        PYTHON="$repo_dir/.venv/bin/python"
    else
        PYTHON=python3
    fi
fi

MODE=local
declare -A JOB_IDS=()   # job name -> SLURM job id (dry-run: a $variable standing for it)
JOB_ORDER=()            # job names in submission order

# set_mode LOCAL_FLAG DRY_RUN_FLAG: local with --local or without sbatch on
# the PATH, dry-run with --dry-run (it needs no sbatch), else slurm.
set_mode() {
    if [[ "$2" == "1" ]]; then
        MODE=dry-run
    elif [[ "$1" == "1" ]] || ! command -v sbatch >/dev/null 2>&1; then
        MODE=local
    else
        MODE=slurm
    fi
}

# load_cluster_config [FILE]: read the cluster settings from FILE, else from
# $CLUSTER_CONFIG, else from slurm/cluster.conf when it exists. The file is a
# bash file of CLUSTER_* assignments; a CLUSTER_* variable already set in the
# environment wins over the file's value.
load_cluster_config() {
    local file="${1:-${CLUSTER_CONFIG:-}}"
    if [[ -z "$file" && -f "$repo_dir/slurm/cluster.conf" ]]; then
        file="$repo_dir/slurm/cluster.conf"
    fi

    if [[ -n "$file" ]]; then
        if [[ ! -f "$file" ]]; then
            echo "error: cluster config file not found: $file (copy slurm/cluster.conf.example)" >&2
            exit 2
        fi
        local -A from_environment=()
        local name
        for name in $(compgen -v CLUSTER_ || true); do
            from_environment[$name]="${!name}"
        done
        # shellcheck disable=SC1090
        source "$file"
        for name in "${!from_environment[@]}"; do
            printf -v "$name" '%s' "${from_environment[$name]}"
        done
        CLUSTER_CONFIG_FILE="$file"
    fi

    : "${CLUSTER_PARTITION:=}" "${CLUSTER_ACCOUNT:=}" "${CLUSTER_GPU_TYPE:=}"
    : "${CLUSTER_CPU_PARTITION:=$CLUSTER_PARTITION}"
    : "${CLUSTER_GPUS_TRAIN:=1}" "${CLUSTER_GPUS_COMPLETE:=1}"
    : "${CLUSTER_CPUS:=4}" "${CLUSTER_MEM:=}" "${CLUSTER_TIME:=4:00:00}"
    : "${CLUSTER_INPAINT_TASKS:=1}" "${CLUSTER_SETUP:=}" "${CLUSTER_EXTRA_ARGS:=}"
    : "${CLUSTER_ROOT:=}"

    # Jobs run CLUSTER_SETUP first; once it has activated an environment,
    # its `python` is the one to use, else this submitting side's.
    if [[ -z "${CLUSTER_PYTHON:-}" ]]; then
        if [[ -n "$CLUSTER_SETUP" ]]; then
            CLUSTER_PYTHON=python
        elif [[ "$PYTHON" == */* ]]; then
            CLUSTER_PYTHON="$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")"
        else
            CLUSTER_PYTHON="$PYTHON"
        fi
    fi

    local setting
    for setting in CLUSTER_GPUS_TRAIN CLUSTER_GPUS_COMPLETE CLUSTER_CPUS CLUSTER_INPAINT_TASKS; do
        if [[ ! "${!setting}" =~ ^[0-9]+$ ]]; then
            echo "error: $setting must be a whole number, got '${!setting}'${CLUSTER_CONFIG_FILE:+ (config $CLUSTER_CONFIG_FILE)}" >&2
            exit 2
        fi
    done
    if (( CLUSTER_INPAINT_TASKS < 1 )); then
        echo "error: CLUSTER_INPAINT_TASKS must be at least 1, got $CLUSTER_INPAINT_TASKS" >&2
        exit 2
    fi
}

# job_python: the Python command of a step: CLUSTER_PYTHON in a job, $PYTHON here.
job_python() {
    if [[ "$MODE" == local ]]; then
        printf '%s\n' "$PYTHON"
    else
        printf '%s\n' "$CLUSTER_PYTHON"
    fi
}

# absolute_path PATH: PATH made absolute against the current folder, since
# jobs run in the repository folder and not where they were submitted from.
absolute_path() {
    case "$1" in
        /*) printf '%s\n' "$1" ;;
        *) printf '%s\n' "$PWD/$1" ;;
    esac
}

# stage_time STAGE: CLUSTER_TIME_<STAGE> (upper case, - as _), else CLUSTER_TIME.
stage_time() {
    local key="CLUSTER_TIME_${1^^}"
    key="${key//-/_}"
    printf '%s\n' "${!key:-$CLUSTER_TIME}"
}

# stage_gpus STAGE: GPUs per job of STAGE; only training and inpainting use them.
stage_gpus() {
    case "$1" in
        train) printf '%s\n' "$CLUSTER_GPUS_TRAIN" ;;
        complete) printf '%s\n' "$CLUSTER_GPUS_COMPLETE" ;;
        *) printf '0\n' ;;
    esac
}

# dependency_list NAME...: the job ids of NAME... joined by ':' (names that
# were not submitted, such as local steps, are left out).
dependency_list() {
    local ids=() name
    for name in "$@"; do
        if [[ -n "${JOB_IDS[$name]:-}" ]]; then
            ids+=("${JOB_IDS[$name]}")
        fi
    done
    local IFS=:
    printf '%s\n' "${ids[*]}"
}

# submit_job STAGE MODEL DEPENDENCIES -- COMMAND...
# Runs COMMAND as the job STAGE-MODEL (MODEL may be empty) after the jobs
# whose ids DEPENDENCIES lists (colon-separated, may be empty). With
# JOB_ARRAY=N set, the job is an array of N tasks; COMMAND reads its task
# index from SLURM_ARRAY_TASK_ID, which a local run of N >= 2 tasks sets for
# each task in turn (a local run of one task runs COMMAND once, as is).
# Records the job id in JOB_IDS[STAGE-MODEL].
submit_job() {
    local stage="$1" model="$2" after="$3"
    shift 3
    [[ "${1:-}" == "--" ]] && shift
    local name="$stage${model:+-$model}"
    local tasks="${JOB_ARRAY:-}"
    JOB_ORDER+=("$name")

    if [[ "$MODE" == local ]]; then
        JOB_IDS[$name]=""
        if [[ -n "$tasks" ]] && (( tasks > 1 )); then
            local task
            for (( task = 0; task < tasks; task++ )); do
                echo "[local] $name task $task of $tasks: $*"
                SLURM_ARRAY_TASK_ID=$task SLURM_ARRAY_TASK_COUNT=$tasks "$@"
            done
        else
            echo "[local] $name: $*"
            "$@"
        fi
        return 0
    fi

    local gpus partition log options=()
    gpus=$(stage_gpus "$stage")
    if (( gpus > 0 )); then
        partition="$CLUSTER_PARTITION"
    else
        partition="$CLUSTER_CPU_PARTITION"
    fi
    if [[ -n "$tasks" ]]; then
        log="$LOG_DIR/$name-%A_%a.out"
    else
        log="$LOG_DIR/$name-%j.out"
    fi
    # --open-mode=append keeps the output of a run that was preempted and
    # requeued: the requeued run writes to the same file, after it.
    options+=(--parsable --job-name="$name" --output="$log" --open-mode=append
              --requeue --kill-on-invalid-dep=yes --time="$(stage_time "$stage")"
              --cpus-per-task="$CLUSTER_CPUS")
    [[ -n "$partition" ]] && options+=(--partition="$partition")
    [[ -n "$CLUSTER_ACCOUNT" ]] && options+=(--account="$CLUSTER_ACCOUNT")
    [[ -n "$CLUSTER_MEM" ]] && options+=(--mem="$CLUSTER_MEM")
    (( gpus > 0 )) && options+=(--gres="gpu:${CLUSTER_GPU_TYPE:+$CLUSTER_GPU_TYPE:}$gpus")
    [[ -n "$tasks" ]] && options+=(--array="0-$(( tasks - 1 ))")
    local extra=()
    read -r -a extra <<< "$CLUSTER_EXTRA_ARGS"
    options+=("${extra[@]}")
    local job=("$repo_dir/scripts/slurm_job.sh" "$repo_dir" "$CLUSTER_SETUP" -- "$@")

    if [[ "$MODE" == dry-run ]]; then
        if [[ ${#JOB_ORDER[@]} -eq 1 ]]; then
            echo "# Dry run: nothing is submitted. Each line would store its job's id in a variable"
            echo "# named after the job (- as _), and later --dependency options read it."
        fi
        local variable="${name//[^A-Za-z0-9_]/_}"
        JOB_IDS[$name]="\$$variable"
        local line
        line="$variable=\$(sbatch$(printf ' %q' "${options[@]}")"
        [[ -n "$after" ]] && line+=" --dependency=afterok:$after"
        line+="$(printf ' %q' "${job[@]}"))"
        printf '%s\n' "$line"
        return 0
    fi

    mkdir -p "$LOG_DIR"
    [[ -n "$after" ]] && options+=(--dependency="afterok:$after")
    local output
    if ! output=$(sbatch "${options[@]}" "${job[@]}"); then
        echo "error: sbatch failed for job $name; jobs submitted before it: $(submitted_summary)" >&2
        exit 1
    fi
    JOB_IDS[$name]="${output%%;*}"
    printf 'submitted %-24s job %s%s\n' "$name" "${JOB_IDS[$name]}" "${after:+, after $after}"
}

# submitted_summary: "name=id ..." of every job submitted so far.
submitted_summary() {
    local name parts=()
    for name in "${JOB_ORDER[@]}"; do
        [[ -n "${JOB_IDS[$name]:-}" ]] && parts+=("$name=${JOB_IDS[$name]}")
    done
    printf '%s\n' "${parts[*]:-none}"
}

# print_slurm_summary: print the ids of the submitted jobs and where their logs go.
print_slurm_summary() {
    [[ "$MODE" == slurm ]] || return 0
    local ids=() name
    for name in "${JOB_ORDER[@]}"; do
        [[ -n "${JOB_IDS[$name]:-}" ]] && ids+=("${JOB_IDS[$name]}")
    done
    local IFS=,
    echo
    echo "Submitted ${#ids[@]} job(s). Follow them with:"
    echo "  squeue -j ${ids[*]}"
    echo "  logs: $LOG_DIR/<job name>-<job id>.out (array tasks: <job name>-<array id>_<task>.out)"
}

# train_job MODEL DEPENDENCIES PRESET ROOT EXTRA...: train one GAN.
# On SLURM with CLUSTER_GPUS_TRAIN >= 2, the job gets that many GPUs and
# train.py --gpus; a model that cannot train data-parallel gets one GPU.
train_job() {
    local model="$1" after="$2" preset="$3" root="$4"
    shift 4
    local gpu_option=()
    local CLUSTER_GPUS_TRAIN="${CLUSTER_GPUS_TRAIN:-1}"
    if [[ "$MODE" != local ]] && (( CLUSTER_GPUS_TRAIN > 1 )); then
        load_multi_gpu_models
        if [[ " $MULTI_GPU_MODELS " == *" $model "* ]]; then
            gpu_option=(--gpus "$CLUSTER_GPUS_TRAIN")
        else
            echo "note: $model cannot train on several GPUs (see train.py --help); its job gets one GPU" >&2
            CLUSTER_GPUS_TRAIN=1
        fi
    fi
    submit_job train "$model" "$after" -- "$(job_python)" "$repo_dir/train.py" --model "$model" \
        --preset "$preset" --root "$root" "${gpu_option[@]}" "$@"
}

# load_multi_gpu_models: set MULTI_GPU_MODELS to the models whose training
# step can be split across GPUs, separated by spaces. Importing models.gan
# loads TensorFlow (seconds), so the list is computed once per script.
MULTI_GPU_MODELS=""
load_multi_gpu_models() {
    if [[ -z "$MULTI_GPU_MODELS" ]]; then
        MULTI_GPU_MODELS=$(cd "$repo_dir" && TF_CPP_MIN_LOG_LEVEL=3 "$PYTHON" - <<'EOF'
from models import get_spec, model_names
from models.gan import UnsupportedDistribution, check_distributable


def distributable(name):
    try:
        check_distributable(get_spec(name))
    except UnsupportedDistribution:
        return False
    return True


print(*[name for name in model_names() if distributable(name)])
EOF
        )
    fi
}

# complete_jobs MODEL DEPENDENCIES TASKS PRESET ROOT EXTRA...: inpaint the
# test images with one GAN as an array of TASKS tasks, each on its own range
# of images (scripts/inpaint_task.py; one task runs complete.py on all
# images). With several tasks, a short job
# "collect" follows them: complete.py over all images, which finds every
# image done and only rewrites fill_quality.csv from all tasks' results,
# since tasks that end together may each have written it without the
# others' rows. Records the id that later steps wait for in
# JOB_IDS[complete-MODEL-done].
complete_jobs() {
    local model="$1" after="$2" tasks="$3" preset="$4" root="$5"
    shift 5
    local python
    python=$(job_python)
    local command=("$repo_dir/complete.py")
    if (( tasks > 1 )); then
        command=("$repo_dir/scripts/inpaint_task.py" --)
    fi
    JOB_ARRAY="$tasks" submit_job complete "$model" "$after" -- "$python" "${command[@]}" \
        --model "$model" --preset "$preset" --root "$root" "$@"
    JOB_IDS[complete-$model-done]="${JOB_IDS[complete-$model]}"
    if (( tasks > 1 )); then
        submit_job collect "$model" "$(dependency_list "complete-$model")" -- "$python" \
            "$repo_dir/complete.py" --model "$model" --preset "$preset" --root "$root" "$@"
        JOB_IDS[complete-$model-done]="${JOB_IDS[collect-$model]}"
    fi
}

# underfit_job MODEL DEPENDENCIES ROOT EXTRA...: the generalization gap of one GAN.
underfit_job() {
    local model="$1" after="$2" root="$3"
    shift 3
    submit_job underfit "$model" "$after" -- "$(job_python)" "$repo_dir/underfit.py" \
        --root "$root" --model "$model" "$@"
}

# parse_stage_options SCRIPT "OPTIONAL..." ARGS...: read the options that
# run_training_all.sh, run_completion_all.sh and run_underfit_all.sh share:
# --local, --dry-run, --config, --root, --after, model names, and -- before
# the stage script's own options. OPTIONAL lists which of preset and tasks
# SCRIPT takes too. Sets LOCAL, DRY_RUN, CONFIG, PRESET (default: paper),
# ROOT, TASKS, AFTER, MODELS and EXTRA. --help prints SCRIPT's header comment.
parse_stage_options() {
    local script="$1" optional=" $2 "
    shift 2
    LOCAL=0 DRY_RUN=0 CONFIG="" PRESET=paper ROOT="" TASKS="" AFTER="" MODELS=() EXTRA=()
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --local) LOCAL=1 ;;
            --dry-run) DRY_RUN=1 ;;
            --config|--root|--after|--preset|--tasks)
                local name="${1#--}"
                if [[ "$name" =~ ^(preset|tasks)$ && "$optional" != *" $name "* ]]; then
                    echo "error: unknown option $1 (see --help)" >&2
                    exit 2
                fi
                if [[ $# -lt 2 ]]; then
                    echo "error: $1 needs a value (see --help)" >&2
                    exit 2
                fi
                printf -v "${name^^}" '%s' "$2"
                shift ;;
            --) shift; EXTRA=("$@"); break ;;
            -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$script"; exit 0 ;;
            -*) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
            *) MODELS+=("$1") ;;
        esac
        shift
    done
}

# prepare_stage: act on the parsed options. Chooses the mode, loads the
# cluster settings (--tasks wins over CLUSTER_INPAINT_TASKS), makes ROOT
# absolute for jobs, which may start in another directory, and fills MODELS
# with the whole zoo when none were named. Sets LOG_DIR.
prepare_stage() {
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
}
