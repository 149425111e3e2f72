"""Every stage, chained by run_experiment.sh, on a few dozen real CelebA faces."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

MODELS = ("dcgan", "wgan-gp")


@pytest.fixture(scope="module")
def finished_experiment(tmp_path_factory):
    from conftest import CELEBA_SAMPLE

    if not CELEBA_SAMPLE.is_dir():
        pytest.skip(f"real CelebA sample not found at {CELEBA_SAMPLE} (set CELEBA_SAMPLE to its folder)")
    base = tmp_path_factory.mktemp("e2e")
    data = base / "faces"
    data.mkdir()
    # A copy of 40 real faces, so the split sees a small dataset; the shared folder is only read.
    for path in sorted(CELEBA_SAMPLE.iterdir())[:40]:
        shutil.copyfile(path, data / path.name)
    root = base / "exp"
    env = dict(os.environ, PYTHON=sys.executable)
    command = ["bash", str(REPO / "run_experiment.sh"), "--local", "--data", str(data), "--root", str(root),
               "--preset", "smoke", "--models", " ".join(MODELS)]
    result = subprocess.run(command, cwd=base, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root, result, command, env, base


def test_every_stage_writes_its_outputs(finished_experiment):
    root, result, *_ = finished_experiment
    assert (root / "split" / "manifest.json").exists()
    assert len((root / "split" / "test.txt").read_text().split()) == 6
    assert (root / "tfrecords" / "manifest.json").exists()
    for model in MODELS:
        assert list((root / "checkpoints" / model).glob("ckpt-*.npz"))
        assert list((root / "checkpoints" / model / "samples").glob("*.png"))
        completions = root / "completions_stochastic_center" / model / "test"
        assert sorted(int(p.name) for p in completions.iterdir() if p.name.isdigit()) == list(range(6))
        assert (root / "underfit" / model / "underfit.csv").exists()
        assert any((root / "imagesdb" / "0" / "gen").glob(f"{model}.jpg"))
    for figure in ("sim_distances.png", "joint_bar.png"):
        assert (root / "figures" / figure).stat().st_size > 10_000
    assert "Experiment finished" in result.stdout


def test_distances_have_one_row_per_image_and_model_columns(finished_experiment):
    root, *_ = finished_experiment
    with open(root / "gan_distances.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6
    assert set(MODELS) <= set(rows[0])
    for row in rows:
        for model in MODELS:
            if row[model]:
                assert 0.0 <= float(row[model]) <= 2.0


def test_underfit_rows_and_buckets(finished_experiment):
    root, *_ = finished_experiment
    for model in MODELS:
        with open(root / "underfit" / model / "underfit.csv") as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == 6
        for row in rows:
            if row["bucket"] == "excluded":
                continue
            gap = float(row["d_test"]) - float(row["d_train_1"])
            assert float(row["gap"]) == pytest.approx(gap, abs=1e-6)
            assert row["bucket"] == ("generalized" if gap <= 0 else "recall")
            assert (root / "underfit" / model / row["bucket"] / f"{row['idx']}.jpg").exists()


def test_rerun_keeps_every_result(finished_experiment):
    root, _, command, env, base = finished_experiment
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*")
              if p.is_file() and "provenance" not in p.parts}
    again = subprocess.run(command, cwd=base, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    for path, stamp in stamps.items():
        assert path.exists(), f"{path} was deleted by the rerun"
    changed = [p for p, stamp in stamps.items()
               if p.stat().st_mtime_ns != stamp and p.suffix in (".npz", ".jpg", ".tfrecord")]
    assert not changed, f"the rerun rewrote {changed[:5]}"
