"""Summary statistics, paired tests, bootstrap intervals, figures and the analyze.py command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from study import analysis
from study.analysis import (bootstrap_ci, display_label, friedman_test, holm_adjust, load_distances,
                            rank_biserial, read_protocol, run_analysis, wilcoxon_test)
from study.layout import Layout

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


@pytest.fixture(autouse=True)
def low_resolution_figures(monkeypatch):
    """Draw the figures at 60 dpi: the same code at a fifth of the pixels keeps the tests fast."""
    monkeypatch.setattr(analysis, "FIGURE_DPI", 60)


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


# --- paired statistics ---------------------------------------------------------------------

def test_holm_matches_hand_example():
    # Sorted: 0.005, 0.01, 0.03, 0.04 -> 4 * 0.005, 3 * 0.01, 2 * 0.03, max(1 * 0.04, 0.06).
    adjusted = holm_adjust([0.01, 0.04, 0.03, 0.005])

    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])


def test_holm_caps_at_one_and_keeps_nan():
    adjusted = holm_adjust([0.4, np.nan, 0.5])

    np.testing.assert_allclose(adjusted[[0, 2]], [0.8, 0.8])
    assert np.isnan(adjusted[1])
    assert holm_adjust([0.9, 0.7])[0] == 1.0


def test_rank_biserial_matches_hand_example():
    # Differences 1, -2, 3, 4, 0: the zero is dropped, ranks of |d| are 1..4,
    # R+ = 1 + 3 + 4 = 8 and R- = 2, so r = (8 - 2) / 10.
    a = np.array([2.0, 1.0, 5.0, 4.0, 7.0])
    b = np.array([1.0, 3.0, 2.0, 0.0, 7.0])

    assert rank_biserial(a, b) == pytest.approx(0.6)
    assert rank_biserial(b, a) == pytest.approx(-0.6)


def test_rank_biserial_ties_and_all_zero():
    # |d| = 1, 1, 2: average ranks 1.5, 1.5, 3; R+ = 1.5 + 3, R- = 1.5.
    assert rank_biserial([1.0, 0.0, 2.0], [0.0, 1.0, 0.0]) == pytest.approx((4.5 - 1.5) / 6)
    assert np.isnan(rank_biserial([1.0, 2.0], [1.0, 2.0]))


def test_friedman_and_wilcoxon_match_scipy():
    from scipy.stats import friedmanchisquare, wilcoxon

    rng = np.random.default_rng(4)
    wide = pd.DataFrame({"a": rng.normal(0.30, 0.1, 40), "b": rng.normal(0.35, 0.1, 40),
                         "c": rng.normal(0.30, 0.1, 40)})

    result = friedman_test(wide)
    expected = friedmanchisquare(wide["a"], wide["b"], wide["c"])
    assert result["statistic"] == pytest.approx(expected.statistic)
    assert result["p_value"] == pytest.approx(expected.pvalue)

    paired = wilcoxon_test(wide["a"].to_numpy(), wide["b"].to_numpy())
    expected = wilcoxon(wide["a"], wide["b"])
    assert paired["wilcoxon_statistic"] == pytest.approx(expected.statistic)
    assert paired["p_value"] == pytest.approx(expected.pvalue)
    assert paired["rank_biserial"] == pytest.approx(rank_biserial(wide["a"], wide["b"]))


def test_wilcoxon_all_equal_gives_nan():
    result = wilcoxon_test(np.array([0.1, 0.2]), np.array([0.1, 0.2]))

    assert np.isnan(result["p_value"])
    assert "zero" in result["note"]


def test_friedman_needs_three_models():
    result = friedman_test(pd.DataFrame({"a": [1.0, 2.0], "b": [2.0, 1.0]}))

    assert np.isnan(result["p_value"])
    assert "3 models" in result["note"]


# Four GANs on 30 shared images; "wgan-gp" is clearly worse.
PAIRED_MODELS = ("dcgan", "wgan-gp", "dragan", "wgan")


@pytest.fixture
def paired_root(tmp_path) -> Path:
    rng = np.random.default_rng(11)
    root = tmp_path / "paired"
    root.mkdir()
    n = 30
    base = rng.normal(0.3, 0.05, n)
    columns = {model: base + rng.normal(0.0, 0.02, n) + (0.1 if model == "wgan-gp" else 0.0)
               for model in PAIRED_MODELS}
    columns["wgan"][5] = np.nan                      # one image missing for one model
    pd.DataFrame({"idx": range(n), **columns}).to_csv(root / "gan_distances.csv", index=False)
    for model in PAIRED_MODELS:
        folder = root / "underfit" / model
        folder.mkdir(parents=True)
        pd.DataFrame({"idx": range(n), "gap": rng.normal(-0.05, 0.05, n),
                      "d_test": columns[model]}).to_csv(folder / "underfit.csv", index=False)
    for baseline, gap in (("baseline_test", -0.2), ("baseline_copy", 0.05)):
        folder = root / "underfit" / baseline
        folder.mkdir(parents=True)
        pd.DataFrame({"idx": range(n), "gap": gap + rng.normal(0, 0.01, n),
                      "d_test": np.zeros(n) if baseline == "baseline_test" else rng.uniform(0.1, 0.2, n)}
                     ).to_csv(folder / "underfit.csv", index=False)
    return root


def test_pairwise_csv_holm_within_metric(paired_root):
    result = run_analysis(paired_root, n_resamples=200, report=False)
    pairwise = pd.read_csv(paired_root / "results" / "pairwise.csv")

    distance = pairwise[pairwise["metric"] == "distance"]
    assert len(distance) == 6                          # 4 GANs, 6 pairs, no baselines
    assert not pairwise["model_a"].str.startswith("baseline_").any()
    assert set(distance["n_images"]) == {29}           # images complete for every GAN
    np.testing.assert_allclose(distance["p_holm"], holm_adjust(distance["p_value"]))
    worse = distance[(distance["model_a"] == "dcgan") & (distance["model_b"] == "wgan-gp")].iloc[0]
    assert worse["rank_biserial"] == -1.0
    assert worse["p_holm"] < 0.01
    assert result.pairwise_path == paired_root / "results" / "pairwise.csv"


def test_friedman_csv_matches_scipy(paired_root):
    from scipy.stats import friedmanchisquare

    run_analysis(paired_root, n_resamples=200, report=False)
    friedman = pd.read_csv(paired_root / "results" / "friedman.csv").set_index("metric")
    table = pd.read_csv(paired_root / "gan_distances.csv").dropna()

    expected = friedmanchisquare(*[table[model] for model in PAIRED_MODELS])
    assert friedman.loc["distance", "statistic"] == pytest.approx(expected.statistic)
    assert friedman.loc["distance", "p_value"] == pytest.approx(expected.pvalue)
    assert friedman.loc["distance", "n_images"] == 29


def test_baselines_in_summary_after_gans(paired_root):
    summary = run_analysis(paired_root, n_resamples=200, report=False).summary

    assert list(summary["model"]) == [*PAIRED_MODELS, "baseline_test", "baseline_copy"]
    assert list(summary["kind"]) == ["gan"] * 4 + ["baseline"] * 2
    baseline = summary.set_index("model").loc["baseline_test"]
    assert baseline["distance_mean"] == 0.0            # its d_test column
    assert baseline["label"].startswith("baseline: ")


def test_fill_quality_metrics_summarized(paired_root):
    values = np.linspace(10, 20, 30)
    folder = paired_root / "completions_stochastic_center" / "dcgan" / "test"
    folder.mkdir(parents=True)
    pd.DataFrame({"idx": range(30), "l1_blended": values, "psnr_blended": values + 5,
                  "ssim_blended": values / 100, "l1_overlay": values, "psnr_overlay": values,
                  "ssim_overlay": values / 50}).to_csv(folder / "fill_quality.csv", index=False)

    summary = run_analysis(paired_root, n_resamples=200, report=False).summary.set_index("model")

    assert summary.loc["dcgan", "psnr_blended_mean"] == pytest.approx(values.mean() + 5)
    assert summary.loc["dcgan", "psnr_blended_n"] == 30
    assert summary.loc["wgan-gp", "psnr_blended_n"] == 0
    assert np.isnan(summary.loc["wgan-gp", "psnr_blended_mean"])


def test_summary_without_fill_quality_has_no_fill_columns(paired_root):
    summary = run_analysis(paired_root, n_resamples=200, report=False).summary

    assert not [column for column in summary.columns if column.startswith("psnr")]


def test_seeds_grouped_and_spread(paired_root):
    distances = pd.read_csv(paired_root / "gan_distances.csv")
    distances["dcgan+seed1"] = distances["dcgan"] + 0.01
    distances.to_csv(paired_root / "gan_distances.csv", index=False)
    folder = paired_root / "underfit" / "dcgan+seed1"
    folder.mkdir()
    gaps = pd.read_csv(paired_root / "underfit" / "dcgan" / "underfit.csv")
    gaps.assign(gap=gaps["gap"] + 0.02).to_csv(folder / "underfit.csv", index=False)

    result = run_analysis(paired_root, n_resamples=200, seeds=True, report=False)
    spread = pd.read_csv(paired_root / "results" / "seeds.csv")
    pairwise = pd.read_csv(paired_root / "results" / "pairwise.csv")

    row = spread[(spread["metric"] == "distance") & (spread["gan"] == "dcgan")].iloc[0]
    assert row["n_runs"] == 2
    assert row["seed_range"] == pytest.approx(0.01)
    summary = result.summary.set_index("model")
    assert summary.loc["dcgan+seed1", "gan"] == "dcgan"
    assert summary.loc["dcgan+seed1", "seed"] == 1
    between = pairwise[(pairwise["comparison"] == "between GANs") & (pairwise["metric"] == "distance")]
    assert len(between) == 6                           # still 4 GANs
    seeds = pairwise[pairwise["comparison"] == "between seeds of dcgan"]
    assert set(seeds["metric"]) == {"distance", "gap"}
    assert (seeds["rank_biserial"] == -1.0).all()      # seed 1 is always higher
    assert result.bars_path.stat().st_size > 1000


def test_figures_show_baselines_and_protocol(paired_root):
    (paired_root / "gan_distances.inputs.json").write_text('{"protocol": "test-protocol-64px"}')

    result = run_analysis(paired_root, n_resamples=200, report=False)

    for path in (result.boxplot_path, result.bars_path):
        assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert read_protocol(Layout(paired_root)) == "test-protocol-64px"


def test_analyze_cli_report_only(paired_root):
    run_analysis(paired_root, n_resamples=200, report=False)

    completed = subprocess.run(
        [sys.executable, str(REPO / "analyze.py"), "--root", str(paired_root), "--report-only"],
        cwd=REPO, capture_output=True, text=True, timeout=120)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert (paired_root / "report" / "index.html").is_file()


def _fill_quality(root: Path, folder_name: str, value: float) -> None:
    folder = root / folder_name / "dcgan" / "test"
    folder.mkdir(parents=True)
    pd.DataFrame({"idx": range(30), "l1_blended": value, "psnr_blended": value, "ssim_blended": value,
                  "l1_overlay": value, "psnr_overlay": value, "ssim_overlay": value}
                 ).to_csv(folder / "fill_quality.csv", index=False)


def test_completions_default_to_image_database(paired_root):
    from study.provenance import write_json_atomic

    _fill_quality(paired_root, "completions_stochastic_center", 1.0)
    _fill_quality(paired_root, "completions_standard_left", 2.0)
    write_json_atomic(paired_root / "imagesdb" / "database.json",
                      {"completions": "/elsewhere/completions_standard_left", "models": ["dcgan"]})

    result = run_analysis(paired_root, n_resamples=200)

    assert result.summary.set_index("model").loc["dcgan", "psnr_blended_mean"] == 2.0
    assert "clipping standard, mask left" in (paired_root / "report" / "index.html").read_text()
    with pytest.raises(ValueError, match="come from completions_standard_left") as caught:
        run_analysis(paired_root, n_resamples=200, mask="center")
    assert "completions_standard_center" in str(caught.value)


def test_completions_flags_need_existing_folder(paired_root):
    _fill_quality(paired_root, "completions_stochastic_center", 1.0)

    completed = subprocess.run(
        [sys.executable, str(REPO / "analyze.py"), "--root", str(paired_root), "--maskType", "left",
         "--resamples", "50", "--no-report"], cwd=REPO, capture_output=True, text=True, timeout=120)

    assert completed.returncode == 2
    assert "completions_stochastic_left" in completed.stderr
    assert "this experiment has completions_stochastic_center" in completed.stderr
    assert not (paired_root / "results").exists()


def test_joint_bars_count_each_panel_separately(root):
    summary = run_analysis(root, n_resamples=100, report=False).summary
    figure = analysis.joint_bar_figure(summary, 100, 0)
    distance_panel, gap_panel = figure.axes[:2]

    def counts(axes):
        return [text.get_text() for text in axes.texts if text.get_text().startswith("n=")]

    by_model = summary.set_index("model")
    assert counts(distance_panel) == [f"n={by_model.loc[m, 'distance_n']}" for m in summary["model"]]
    assert counts(gap_panel) == [f"n={by_model.loc[m, 'gap_n']}" for m in summary["model"]]
    # mygan has distances but no gaps: its two panels must not show the same count.
    assert by_model.loc["mygan", "distance_n"] == 5
    assert by_model.loc["mygan", "gap_n"] == 0
    assert [label.get_text() for label in distance_panel.get_yticklabels()] == [
        analysis.plot_label(m) for m in summary["model"]]


def _write_db_embeddings(root: Path, protocol: str, source: str, missed: set[int], n: int = 30) -> None:
    folder = root / "embeddings"
    folder.mkdir(exist_ok=True)
    np.savez(folder / f"db_{source}__{protocol}.npz", keys=np.array([str(i) for i in range(n)]),
             face_found=np.array([i not in missed for i in range(n)]),
             embeddings=np.zeros((n, 4), np.float32))


@pytest.mark.parametrize("alignment", ["landmarks", "none"])
def test_missed_faces_counted(paired_root, alignment):
    from study.provenance import write_json_atomic

    protocol = f"dlib-{alignment}-crop0.78-64px-in150px-abcdef12"
    write_json_atomic(paired_root / "gan_distances.inputs.json", {"protocol": protocol})
    _write_db_embeddings(paired_root, protocol, "original", {3})
    _write_db_embeddings(paired_root, protocol, "dcgan", {3, 5})     # 3 is missed in both
    _write_db_embeddings(paired_root, protocol, "wgan-gp", set())

    summary = run_analysis(paired_root, n_resamples=100, report=False).summary.set_index("model")

    if alignment == "none":  # no detector ran, so there is nothing to count
        assert "distance_no_face_n" not in summary.columns
        return
    assert summary.loc["dcgan", "distance_no_face_n"] == 2
    assert summary.loc["wgan-gp", "distance_no_face_n"] == 1
    assert pd.isna(summary.loc["dragan", "distance_no_face_n"])   # no embedding file for it
