# Shared helpers for the run_*.sh scripts; sourced, not executed.

# The Python to use: $PYTHON, else the project's .venv, else python3.
repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$repo_dir/.venv/bin/python" ]]; then
        PYTHON="$repo_dir/.venv/bin/python"
    else
        PYTHON=python3
    fi
fi

# use_slurm LOCAL_FLAG: true when jobs should go through sbatch.
use_slurm() {
    [[ "$1" != "1" ]] && command -v sbatch >/dev/null 2>&1
}

# submit_or_run NAME LOGDIR COMMAND...: sbatch the command as job NAME
# (extra sbatch options from $SBATCH_ARGS), or run it here and stop on failure.
submit_or_run() {
    local name="$1" logdir="$2"
    shift 2
    if [[ "$LOCAL" == "1" ]] || ! command -v sbatch >/dev/null 2>&1; then
        echo "[local] $name: $*"
        "$@"
    else
        mkdir -p "$logdir"
        local quoted
        quoted=$(printf '%q ' "$@")
        # shellcheck disable=SC2086
        sbatch --parsable --job-name "$name" --requeue --output "$logdir/$name-%j.out" \
            ${SBATCH_ARGS:-} --wrap "cd $(printf '%q' "$repo_dir") && $quoted"
    fi
}
