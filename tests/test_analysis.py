"""Summary statistics, bootstrap intervals, figures and the analyze.py command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from study.analysis import bootstrap_ci, display_label, load_distances, run_analysis

REPO = Path(__file__).resolve().parent.parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

DISTANCES = {
    "dcgan": [0.10, 0.30, 0.20, 0.60, 0.25],
    "wgan-gp": [0.40, 0.35, np.nan, 0.50, 0.45],   # one image without a distance
    "mygan": [0.9, 0.8, 0.7, 0.6, 0.5],             # no underfit results
}
GAPS = {
    "dcgan": [-0.2, 0.1, -0.05, np.nan, 0.3],       # one excluded image
    "wgan-gp": [0.05, -0.1, 0.2, 0.15, -0.3],
    "extra": [0.5, 0.4],                            # no column in gan_distances.csv
}


def bucket_of(gap: float) -> str:
    if np.isnan(gap):
        return "excluded"
    if gap <= 0:
        return "generalized"
    return "recall"


@pytest.fixture
def root(tmp_path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    pd.DataFrame({"idx": range(5), **DISTANCES}).to_csv(root / "gan_distances.csv", index=False)
    for model, gaps in GAPS.items():
        folder = root / "underfit" / model
        folder.mkdir(parents=True)
        pd.DataFrame({"idx": range(len(gaps)), "gap": gaps, "bucket": [bucket_of(g) for g in gaps]}).to_csv(
            folder / "underfit.csv", index=False)
    return root


def test_summary_matches_numpy(root):
    summary = run_analysis(root, n_resamples=2000, seed=3).summary.set_index("model")

    for model, values in DISTANCES.items():
        values = np.array(values)
        values = values[~np.isnan(values)]
        assert summary.loc[model, "distance_n"] == len(values)
        assert summary.loc[model, "distance_mean"] == pytest.approx(values.mean())
        assert summary.loc[model, "distance_median"] == pytest.approx(np.median(values))
    for model, values in GAPS.items():
        series = pd.Series(values)
        assert summary.loc[model, "gap_n"] == series.count()
        assert summary.loc[model, "gap_mean"] == pytest.approx(series.mean())
        assert summary.loc[model, "gap_median"] == pytest.approx(series.median())


def test_summary_models_missing_from_one_csv(root):
    summary = run_analysis(root, n_resamples=500).summary.set_index("model")

    assert list(summary.index) == ["dcgan", "wgan-gp", "mygan", "extra"]
    assert summary.loc["mygan", "gap_n"] == 0
    assert np.isnan(summary.loc["mygan", "gap_mean"])
    assert summary.loc["extra", "distance_n"] == 0
    assert summary.loc["extra", "gap_n"] == 2


def test_summary_csv_written(root):
    result = run_analysis(root, n_resamples=500)
    written = pd.read_csv(root / "results" / "summary.csv")

    assert result.summary_path == root / "results" / "summary.csv"
    assert list(written["label"]) == ["NSGAN", "WGAN-GP", "mygan", "extra"]
    for column in ("distance_ci_low", "distance_ci_high", "gap_ci_low", "gap_ci_high"):
        assert column in written.columns


def test_bootstrap_reproducible_with_seed():
    values = np.random.default_rng(0).normal(1.0, 0.5, size=200)

    first = bootstrap_ci(values, n_resamples=10000, seed=7)
    second = bootstrap_ci(values, n_resamples=10000, seed=7)
    other_seed = bootstrap_ci(values, n_resamples=10000, seed=8)

    assert first == second
    assert first != other_seed


def test_bootstrap_contains_mean():
    values = np.random.default_rng(1).exponential(0.3, size=150)

    low, high = bootstrap_ci(values, n_resamples=10000, seed=0)

    assert low < values.mean() < high
    # Roughly +-1.96 standard errors for a sample this size.
    standard_error = values.std(ddof=1) / np.sqrt(values.size)
    assert high - low == pytest.approx(2 * 1.96 * standard_error, rel=0.2)


def test_bootstrap_edge_cases():
    assert bootstrap_ci([0.4], n_resamples=100) == (0.4, 0.4)
    assert all(np.isnan(bootstrap_ci([np.nan], n_resamples=100)))
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_ci([1.0, 2.0], n_resamples=0)


def test_display_labels():
    assert display_label("dcgan") == "NSGAN"
    assert display_label("wgan-gp") == "WGAN-GP"
    assert display_label("dcgan-cons") == "NSGAN-CONS"
    assert display_label("dragan_bn") == "DRAGAN_BN"
    assert display_label("unregistered-gan") == "unregistered-gan"


def test_figures_written(root):
    result = run_analysis(root, n_resamples=500)

    for path in (root / "figures" / "sim_distances.png", root / "figures" / "joint_bar.png"):
        assert path.stat().st_size > 1000, path
        assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    assert result.boxplot_path == root / "figures" / "sim_distances.png"
    assert result.bars_path == root / "figures" / "joint_bar.png"


def test_single_model_without_underfit(tmp_path):
    pd.DataFrame({"idx": [0, 1, 2], "dcgan": [0.1, 0.2, 0.3]}).to_csv(tmp_path / "gan_distances.csv",
                                                                     index=False)

    result = run_analysis(tmp_path, n_resamples=200)

    assert list(result.summary["model"]) == ["dcgan"]
    assert result.bars_path.stat().st_size > 0


def test_missing_distances_names_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="facenet/gans_compare.py"):
        load_distances(tmp_path / "gan_distances.csv")


def test_analyze_cli_exits_0_without_tensorflow(root):
    # -X importtime lists every imported module on stderr. Plot labels must not import TensorFlow.
    completed = subprocess.run(
        [sys.executable, "-X", "importtime", str(REPO / "analyze.py"), "--root", str(root),
         "--resamples", "1000"],
        cwd=REPO, capture_output=True, text=True, timeout=120)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "NSGAN" in completed.stdout
    assert "WGAN-GP" in completed.stdout
    assert str(root / "figures" / "joint_bar.png") in completed.stdout
    imported = [line.rsplit("|", 1)[-1].strip() for line in completed.stderr.splitlines()
                if line.startswith("import time:")]
    assert "models.zoo" in imported
    assert "tensorflow" not in imported
