"""SLURM job chain tests: the whole study submitted to a real single-node SLURM cluster.

This is the suite's slowest module (about 3 to 5 minutes on 2 CPU cores,
apt-get included); skip it with ``pytest --ignore=tests/test_slurm.py``.

The module fixture starts munged, slurmctld and slurmd on 127.0.0.1 with
scripts/local_slurm.py. When Debian's slurm-wlm and munge are missing it
installs them with apt-get as root, and where that is impossible the tests
are skipped with the reason. It submits the study on the smoke preset with
run_experiment.sh and meanwhile runs the same study with --local. It stops
the daemons by process id when the module ends, whatever the outcome.

The dry-run and task-range tests need no cluster.
"""

from __future__ import annotations

import csv
import datetime
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))

import local_slurm  # noqa: E402

MODELS = ("dcgan", "wgan-gp")
SEED = 0
INPAINT_TASKS = 2
CHAIN_TIMEOUT_S = 900
# Files whose names or contents record when, where or by which process they
# were written, so they differ between any two runs.
VOLATILE_PARTS = {"provenance", "tensorboard", "logs"}
VOLATILE_COLUMNS = {"seconds"}
FLOAT_RTOL = 1e-4
FLOAT_ATOL = 1e-5
PIXEL_TOLERANCE = 2  # JPEG of nearly equal images, in 0..255 units

CONFIG = f"""\
# Cluster settings of the local test cluster (scripts/local_slurm.py).
CLUSTER_PARTITION=debug
CLUSTER_GPUS_TRAIN=0
CLUSTER_GPUS_COMPLETE=0
CLUSTER_CPUS=1
CLUSTER_TIME=0:20:00
CLUSTER_TIME_ANALYZE=0:10:00
CLUSTER_INPAINT_TASKS={INPAINT_TASKS}
"""


def expected_dependencies(models=MODELS) -> dict[str, set[str]]:
    """Job name -> names of the jobs it waits for, in the chain run_experiment.sh submits."""
    collected = {f"collect-{m}" for m in models}
    graph = {"split": set(), "convert": {"split"}, "embed-train": {"convert"}, "embed-test": {"convert"},
             "imagesdb": collected, "compare": {"imagesdb"},
             "underfit-baselines": {"embed-train", "embed-test"} | collected}
    for model in models:
        graph[f"train-{model}"] = {"convert"}
        graph[f"complete-{model}"] = {f"train-{model}"}
        graph[f"collect-{model}"] = {f"complete-{model}"}
        graph[f"embed-inpaint-{model}"] = {f"complete-{model}"}
        graph[f"underfit-{model}"] = {"embed-train", "embed-test", f"embed-inpaint-{model}"}
    graph["analyze"] = ({"compare", "underfit-baselines"} | collected
                        | {f"underfit-{m}" for m in models})
    return graph


# ----- no cluster needed ------------------------------------------------------------------


def _dry_run(tmp_path, *args, env_extra=None):
    env = dict(os.environ, PYTHON=sys.executable, **(env_extra or {}))
    env.pop("CLUSTER_CONFIG", None)
    result = subprocess.run(["bash", *map(str, args)], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _parse_dry_run(output: str) -> dict[str, dict]:
    """Return job name -> {variable, dependencies, line} from dry-run lines.

    A dependency on an earlier line's job is that job's name; one on a job
    id given with --after is the id.
    """
    jobs, by_variable = {}, {}
    for line in output.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        match = re.fullmatch(r"(\w+)=\$\(sbatch (.*)\)", line)
        assert match, f"not an sbatch line: {line}"
        variable, rest = match.groups()
        name = re.search(r"--job-name=(\S+)", rest).group(1)
        dependency = re.search(r"--dependency=afterok:(\S+)", rest)
        names = set()
        if dependency:
            for ref in dependency.group(1).split(":"):
                if ref.isdigit():
                    names.add(ref)
                    continue
                assert ref.startswith("$"), f"{name} waits for {ref}, neither a variable nor an id"
                assert ref[1:] in by_variable, f"{name} waits for {ref}, which no earlier line defines"
                names.add(by_variable[ref[1:]])
        by_variable[variable] = name
        jobs[name] = {"variable": variable, "dependencies": names, "line": rest}
    return jobs


def test_dry_run_prints_dependency_chain(tmp_path):
    config = tmp_path / "cluster.conf"
    config.write_text(CONFIG)
    output = _dry_run(tmp_path, REPO / "run_experiment.sh", "--dry-run", "--config", config,
                      "--data", tmp_path / "faces", "--root", "exp", "--preset", "smoke",
                      "--models", " ".join(MODELS))
    jobs = _parse_dry_run(output)
    graph = expected_dependencies()
    assert set(jobs) == set(graph)
    for name, wanted in graph.items():
        assert jobs[name]["dependencies"] == wanted, name


def test_dry_run_logs_and_arrays(tmp_path):
    config = tmp_path / "cluster.conf"
    config.write_text(CONFIG)
    output = _dry_run(tmp_path, REPO / "run_experiment.sh", "--dry-run", "--config", config,
                      "--data", tmp_path / "faces", "--root", "exp", "--preset", "smoke")
    jobs = _parse_dry_run(output)
    logs = tmp_path / "exp" / "logs"
    for name, job in jobs.items():
        line = job["line"]
        assert "--requeue" in line, name
        assert "--open-mode=append" in line, name
        assert "--partition=debug" in line, name
        assert "--time=" in line, name
        if name.startswith("complete-"):
            assert f"--array=0-{INPAINT_TASKS - 1}" in line
            assert f"--output={logs}/{name}-%A_%a.out" in line
            assert "scripts/inpaint_task.py" in line
        else:
            assert "--array" not in line, name
            assert f"--output={logs}/{name}-%j.out" in line, name
        assert "--gres" not in line, f"{name} asks for GPUs with CLUSTER_GPUS_* = 0"
        assert "--renew" not in line, name
        assert "--overwrite" not in line, name
    assert "--time=0:10:00" in jobs["analyze"]["line"]
    assert "--time=0:20:00" in jobs["train-dcgan"]["line"]


def test_dry_run_gpu_settings(tmp_path):
    output = _dry_run(tmp_path, REPO / "run_training_all.sh", "--dry-run", "--after", "41:42",
                      "dcgan", "dcgan-gp",
                      env_extra={"CLUSTER_GPUS_TRAIN": "2", "CLUSTER_GPU_TYPE": "a100"})
    jobs = _parse_dry_run(output)
    assert "--gres=gpu:a100:2" in jobs["train-dcgan"]["line"]
    assert "--gpus 2" in jobs["train-dcgan"]["line"]
    # dcgan-gp cannot train data-parallel (models/gan.py), so it gets one GPU.
    assert "--gres=gpu:a100:1" in jobs["train-dcgan-gp"]["line"]
    assert "--gpus" not in jobs["train-dcgan-gp"]["line"]
    for job in jobs.values():
        assert job["dependencies"] == {"41", "42"}


def test_environment_overrides_config_file(tmp_path):
    config = tmp_path / "cluster.conf"
    config.write_text(CONFIG + "CLUSTER_ACCOUNT=from_file\n")
    output = _dry_run(tmp_path, REPO / "run_underfit_all.sh", "--dry-run", "--config", config, "dcgan",
                      env_extra={"CLUSTER_PARTITION": "from_environment"})
    line = _parse_dry_run(output)["underfit-dcgan"]["line"]
    assert "--partition=from_environment" in line
    assert "--account=from_file" in line


def test_missing_config_file_is_an_error(tmp_path):
    result = subprocess.run(["bash", str(REPO / "run_training_all.sh"), "--dry-run", "--config",
                             str(tmp_path / "absent.conf"), "dcgan"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert "cluster config file not found" in result.stderr


@pytest.mark.parametrize("script, args, message", [
    ("run_underfit_all.sh", ["--preset", "cpu"], "unknown option --preset"),
    ("run_training_all.sh", ["--tasks", "2"], "unknown option --tasks"),
    ("run_completion_all.sh", ["--root"], "--root needs a value"),
    ("run_training_all.sh", ["--bogus"], "unknown option --bogus"),
])
def test_stage_scripts_reject_bad_options(tmp_path, script, args, message):
    result = subprocess.run(["bash", str(REPO / script), "--dry-run", *args], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("n_images, batch, tasks, ranges", [
    (6, 4, 2, [(0, 4), (4, 6)]),
    (1000, 64, 4, [(0, 256), (256, 512), (512, 768), (768, 1000)]),
    (6, 4, 3, [(0, 4), (4, 6), (6, 6)]),
    (5, 10, 1, [(0, 5)]),
])
def test_inpaint_task_ranges(n_images, batch, tasks, ranges):
    from inpaint_task import task_range

    assert [task_range(n_images, batch, task, tasks) for task in range(tasks)] == ranges


def test_inpaint_task_index_checked():
    from inpaint_task import task_range

    with pytest.raises(ValueError, match="invalid task 2 of 2"):
        task_range(6, 4, 2, 2)


def _loss_row(step: int) -> str:
    from study.training import LOSS_COLUMNS

    return ",".join([str(step)] + ["0.5"] * (len(LOSS_COLUMNS) - 1))


def test_loss_log_trimmed_after_checkpoint(tmp_path):
    from study.training import LOSS_COLUMNS, prepare_loss_log

    path = tmp_path / "losses.csv"
    # A run killed at step 45 after its checkpoint at step 20, halfway through a row.
    rows = [",".join(LOSS_COLUMNS)] + [_loss_row(step) for step in (10, 20, 30, 40)]
    path.write_bytes(("\r\n".join(rows) + "\r\n" + _loss_row(50)[:7]).encode())
    assert prepare_loss_log(path, 20) == (False, LOSS_COLUMNS)
    with open(path, newline="") as handle:
        steps = [int(row["step"]) for row in csv.DictReader(handle)]
    assert steps == [10, 20]
    assert path.read_bytes().endswith(b"\r\n")


def test_loss_log_without_header_gets_one(tmp_path):
    from study.training import LOSS_COLUMNS, prepare_loss_log

    path = tmp_path / "losses.csv"
    assert prepare_loss_log(path, 0) == (True, LOSS_COLUMNS)
    path.write_text("")
    assert prepare_loss_log(path, 0) == (True, LOSS_COLUMNS)
    # Killed while the header was being written.
    path.write_text("step,d_lo")
    assert prepare_loss_log(path, 0) == (True, LOSS_COLUMNS)
    # The header of a run from before sample_std was logged, whole or cut short.
    older = ",".join(c for c in LOSS_COLUMNS if c != "sample_std")
    for text in (older, older[:-5]):
        path.write_text(text)
        assert prepare_loss_log(path, 0) == (True, LOSS_COLUMNS)
    assert path.read_text() == ""


def test_loss_log_of_other_format_kept(tmp_path):
    from study.training import prepare_loss_log

    path = tmp_path / "losses.csv"
    path.write_text("other,header\n1,2\n")
    assert prepare_loss_log(path, 0)[0] is False
    assert path.read_text() == "other,header\n1,2\n"


def test_loss_log_of_older_columns_resumes_in_them(tmp_path):
    from study.training import LOSS_COLUMNS, prepare_loss_log

    older = tuple(c for c in LOSS_COLUMNS if c != "sample_std")
    path = tmp_path / "losses.csv"
    row = lambda step: ",".join([str(step)] + ["0.5"] * (len(older) - 1))
    path.write_text("\r\n".join([",".join(older), row(10), row(20), row(30)]) + "\r\n")
    assert prepare_loss_log(path, 20) == (False, older)
    with open(path, newline="") as handle:
        assert [int(r["step"]) for r in csv.DictReader(handle)] == [10, 20]
    # Resumed from step 0, no older row remains, so the file starts over with the new columns.
    assert prepare_loss_log(path, 0) == (True, LOSS_COLUMNS)
    assert path.read_text() == ""


# ----- the study on a local SLURM cluster -----------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    try:
        local_slurm.ensure_packages(log=lambda message: print(message, file=sys.stderr))
    except local_slurm.ClusterUnavailable as exc:
        pytest.skip(f"no SLURM cluster can run here: {exc}")
    folder = tmp_path_factory.mktemp("slurm")
    started = local_slurm.start(folder)
    try:
        yield started
    finally:
        local_slurm.stop(folder)


def _job_records(env) -> dict[str, list[dict]]:
    """Return submitted job id -> its records in ``scontrol show job`` (one per array task)."""
    result = subprocess.run(["scontrol", "--oneliner", "show", "job"], env=env, capture_output=True,
                            text=True, timeout=60, check=True)
    records: dict[str, list[dict]] = {}
    for line in result.stdout.splitlines():
        fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
        if "JobId" not in fields:
            continue
        records.setdefault(fields.get("ArrayJobId", fields["JobId"]), []).append(fields)
    return records


def _wait_for_jobs(ids, env, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = subprocess.run(["squeue", "--noheader", "--format=%i %j %T %r", "--jobs", ",".join(ids)],
                                env=env, capture_output=True, text=True, timeout=60)
        if result.returncode == 0 and not result.stdout.strip():
            return
        time.sleep(2)
    raise AssertionError(f"jobs still queued after {timeout:.0f} s:\n{result.stdout}")


def _parse_submissions(output: str) -> dict[str, tuple[str, list[str]]]:
    """Return job name -> (job id, ids it waits for) from run_*.sh's 'submitted' lines."""
    jobs = {}
    for line in output.splitlines():
        match = re.fullmatch(r"submitted (\S+)\s+job (\d+)(?:, after (\S+))?", line.strip())
        if match:
            name, job_id, after = match.groups()
            jobs[name] = (job_id, after.split(":") if after else [])
    return jobs


@pytest.fixture(scope="module")
def study_runs(cluster, tmp_path_factory):
    from conftest import CELEBA_SAMPLE

    if not CELEBA_SAMPLE.is_dir():
        pytest.skip(f"real CelebA sample not found at {CELEBA_SAMPLE} (set CELEBA_SAMPLE to its folder)")
    base = tmp_path_factory.mktemp("study")
    faces = base / "faces"
    faces.mkdir()
    # A copy of 40 real faces, so the split reads a small dataset. The shared folder is only read.
    for path in sorted(CELEBA_SAMPLE.iterdir())[:40]:
        shutil.copyfile(path, faces / path.name)
    config = base / "cluster.conf"
    setup = ""
    activate = Path(sys.prefix) / "bin" / "activate"
    if sys.prefix != sys.base_prefix and activate.is_file():
        # As on a cluster: each job activates the environment, then runs `python`.
        setup = f"source {activate}"
    config.write_text(CONFIG + f"CLUSTER_SETUP='{setup}'\n")
    common = ["--config", str(config), "--data", str(faces), "--preset", "smoke",
              "--models", " ".join(MODELS), "--seed", str(SEED)]
    # TensorFlow's CPU kernels split their work across threads as they run.
    # Runs of one seed on a loaded 2-core machine differed in the last bits
    # in 6 of about 75 trials, and training amplifies that. One thread per
    # process fixes the order of every sum, so both runs compute the same.
    threads = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
    env = cluster.environment(dict(os.environ, PYTHON=sys.executable, **threads))
    env.pop("CLUSTER_CONFIG", None)

    # The reference run, on this machine, while the cluster works.
    local_log = open(base / "local.log", "w")
    local = subprocess.Popen(["bash", str(REPO / "run_experiment.sh"), "--local", "--root", str(base / "local"),
                              *common], cwd=base, env=env, stdout=local_log, stderr=subprocess.STDOUT)
    try:
        submitted = subprocess.run(["bash", str(REPO / "run_experiment.sh"), "--root", str(base / "slurm"),
                                    *common], cwd=base, env=env, capture_output=True, text=True, timeout=300)
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        jobs = _parse_submissions(submitted.stdout)
        assert jobs, f"no job ids in the output:\n{submitted.stdout}"
        _wait_for_jobs([job_id for job_id, _ in jobs.values()], env, CHAIN_TIMEOUT_S)
        records = _job_records(env)
        local.wait(timeout=CHAIN_TIMEOUT_S)
    finally:
        if local.poll() is None:
            local.kill()
            local.wait()
        local_log.close()
    assert local.returncode == 0, (base / "local.log").read_text()[-3000:]
    return {"base": base, "slurm": base / "slurm", "local": base / "local", "jobs": jobs,
            "records": records, "output": submitted.stdout, "config": config, "env": env,
            "setup": setup}


def _times(record: dict, key: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(record[key])


def test_chain_submits_expected_jobs(study_runs):
    jobs = study_runs["jobs"]
    ids = {name: job_id for name, (job_id, _) in jobs.items()}
    names = {job_id: name for name, job_id in ids.items()}
    graph = expected_dependencies()
    assert set(jobs) == set(graph)
    for name, (_, after) in jobs.items():
        assert {names[job_id] for job_id in after} == graph[name], name


def test_every_job_completed(study_runs):
    for name, (job_id, _) in study_runs["jobs"].items():
        records = study_runs["records"].get(job_id)
        assert records, f"{name} (job {job_id}) not known to slurmctld"
        for record in records:
            assert record["JobState"] == "COMPLETED", \
                f"{name} job {record['JobId']} ended {record['JobState']}; see {study_runs['slurm']}/logs"


def test_inpainting_runs_as_array(study_runs):
    for model in MODELS:
        job_id, _ = study_runs["jobs"][f"complete-{model}"]
        tasks = sorted(int(record["ArrayTaskId"]) for record in study_runs["records"][job_id])
        assert tasks == list(range(INPAINT_TASKS))


def test_jobs_start_after_their_dependencies(study_runs):
    records = study_runs["records"]
    for name, (job_id, after) in study_runs["jobs"].items():
        for record in records[job_id]:
            started = _times(record, "StartTime")
            for dependency in after:
                for done in records[dependency]:
                    assert started >= _times(done, "EndTime"), \
                        f"{name} started {started} before job {dependency} ended {done['EndTime']}"


def test_one_log_per_job_and_task(study_runs):
    logs = study_runs["slurm"] / "logs"
    for name, (job_id, _) in study_runs["jobs"].items():
        if name.startswith("complete-"):
            paths = [logs / f"{name}-{job_id}_{task}.out" for task in range(INPAINT_TASKS)]
        else:
            paths = [logs / f"{name}-{job_id}.out"]
        for path in paths:
            assert path.is_file(), f"missing log {path}"
            text = path.read_text()
            assert "exit status 0" in text, path
            if study_runs["setup"]:
                assert f"=== setup: {study_runs['setup']}" in text, path


def _comparable_files(root: Path) -> set[Path]:
    return {path.relative_to(root) for path in root.rglob("*")
            if path.is_file() and not VOLATILE_PARTS & set(path.relative_to(root).parts)}


def test_same_files_as_local_run(study_runs):
    slurm = _comparable_files(study_runs["slurm"])
    local = _comparable_files(study_runs["local"])
    assert sorted(map(str, slurm - local)) == []
    assert sorted(map(str, local - slurm)) == []
    assert any(path.name == "gan_distances.csv" for path in slurm)


def _close(first: str, second: str) -> bool:
    try:
        a, b = float(first), float(second)
    except ValueError:
        return first == second
    if np.isnan(a) and np.isnan(b):
        return True
    return bool(np.isclose(a, b, rtol=FLOAT_RTOL, atol=FLOAT_ATOL))


def _rooted(text: str, root: Path) -> str:
    return text.replace(str(root), "<root>")


def test_csv_numbers_match_local_run(study_runs):
    slurm_root, local_root = study_runs["slurm"], study_runs["local"]
    paths = sorted(path for path in _comparable_files(slurm_root) if path.suffix == ".csv")
    assert Path("gan_distances.csv") in paths
    for model in MODELS:
        assert Path("underfit") / model / "underfit.csv" in paths
    for relative in paths:
        with open(slurm_root / relative) as handle:
            slurm_rows = list(csv.reader(handle))
        with open(local_root / relative) as handle:
            local_rows = list(csv.reader(handle))
        assert len(slurm_rows) == len(local_rows), relative
        header = slurm_rows[0] if slurm_rows else []
        for line, (mine, theirs) in enumerate(zip(slurm_rows, local_rows)):
            assert len(mine) == len(theirs), f"{relative} line {line + 1}"
            for column, a, b in zip(header, mine, theirs):
                if column in VOLATILE_COLUMNS:
                    continue
                assert _close(_rooted(a, slurm_root), _rooted(b, local_root)), \
                    f"{relative} line {line + 1} column {column}: SLURM {a}, local {b}"


def test_arrays_match_local_run(study_runs):
    slurm_root, local_root = study_runs["slurm"], study_runs["local"]
    paths = sorted(path for path in _comparable_files(slurm_root) if path.suffix in (".npz", ".npy"))
    assert sum(path.name == "z.npz" for path in paths) == 6 * len(MODELS)
    for relative in paths:
        if relative.suffix == ".npy":
            mine, theirs = {"": np.load(slurm_root / relative)}, {"": np.load(local_root / relative)}
        else:
            mine, theirs = np.load(slurm_root / relative), np.load(local_root / relative)
        assert sorted(mine.keys()) == sorted(theirs.keys()), relative
        for key in mine.keys():
            a, b = mine[key], theirs[key]
            if a.dtype.kind in "fc":
                np.testing.assert_allclose(a, b, rtol=FLOAT_RTOL, atol=FLOAT_ATOL, err_msg=f"{relative} {key}")
            elif a.dtype.kind in "iub":
                np.testing.assert_array_equal(a, b, err_msg=f"{relative} {key}")
            else:
                assert _rooted(str(a.tolist()), slurm_root) == _rooted(str(b.tolist()), local_root), \
                    f"{relative} {key}"


def test_images_match_local_run(study_runs):
    from PIL import Image

    slurm_root, local_root = study_runs["slurm"], study_runs["local"]
    # Figures are drawn from the compared numbers; their pixels depend on the fonts.
    paths = sorted(path for path in _comparable_files(slurm_root)
                   if path.suffix in (".jpg", ".png") and path.parts[0] != "figures")
    assert paths
    for relative in paths:
        a = np.asarray(Image.open(slurm_root / relative), dtype=np.int16)
        b = np.asarray(Image.open(local_root / relative), dtype=np.int16)
        assert a.shape == b.shape, relative
        assert np.abs(a - b).max() <= PIXEL_TOLERANCE, relative


def test_killed_training_resumes_from_checkpoint(study_runs, tmp_path):
    env = study_runs["env"]
    root = tmp_path / "resume"
    for name in ("split", "tfrecords"):
        shutil.copytree(study_runs["slurm"] / name, root / name)
    steps = 600
    command = ["bash", str(REPO / "run_training_all.sh"), "--config", str(study_runs["config"]),
               "--root", str(root), "--preset", "smoke", "dcgan", "--",
               "--max_steps", str(steps), "--ckpt_step", "20", "--seed", str(SEED)]
    folder = root / "checkpoints" / "dcgan"

    def submit() -> str:
        result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return _parse_submissions(result.stdout)["train-dcgan"][0]

    def state(job_id: str) -> str:
        return _job_records(env)[job_id][0]["JobState"]

    first = submit()
    deadline = time.monotonic() + 300
    while not list(folder.glob("ckpt-*.npz")):
        assert state(first) in ("PENDING", "RUNNING"), f"job {first} ended {state(first)} before a checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.2)
    subprocess.run(["scancel", first], env=env, check=True, timeout=60)
    deadline = time.monotonic() + 120
    while state(first) not in ("CANCELLED", "COMPLETED", "FAILED"):
        assert time.monotonic() < deadline, f"job {first} still {state(first)} 120 s after scancel"
        time.sleep(0.5)
    assert state(first) == "CANCELLED", "training ended before scancel; raise max_steps"
    killed_at = int(sorted(folder.glob("ckpt-*.npz"))[-1].stem.split("-")[1])
    assert 0 < killed_at < steps

    second = submit()
    _wait_for_jobs([second], env, 300)
    assert state(second) == "COMPLETED"
    log = (root / "logs" / f"train-dcgan-{second}.out").read_text()
    assert f"resuming dcgan from ckpt-{killed_at:08d}.npz (step {killed_at} of {steps})" in log
    assert sorted(folder.glob("ckpt-*.npz"))[-1].name == f"ckpt-{steps:08d}.npz"
    with open(folder / "losses.csv", newline="") as handle:
        logged = [int(row["step"]) for row in csv.DictReader(handle)]
    # A row every 10 steps from both runs, each step once, with no gap where the job was killed.
    assert logged == list(range(10, steps + 1, 10))
