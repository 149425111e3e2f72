"""Summary statistics, paired tests and figures of the comparison and the generalization gap.

Inputs, all optional except the first:

- ``<root>/gan_distances.csv``: column ``idx`` plus one column of cosine
  distances (original vs blended inpainting) per model;
- ``<root>/underfit/<model>/underfit.csv``: column ``gap`` per image. The
  folders ``baseline_<name>`` hold the reference inpainters of
  :mod:`study.baselines`, whose cosine distance to the original is their
  ``d_test`` column;
- ``<root>/completions_<clipping>_<mask>/<model>/test/fill_quality.csv``:
  columns ``idx`` and the FILL_METRICS, one row per image.

Per model and metric: n, mean, median and a percentile bootstrap 95%
confidence interval of the mean, drawn with a seeded NumPy generator so
reruns give the same numbers. Every GAN inpaints the same test images, so
the GANs are compared with paired tests on the images that have a value for
every GAN. The Friedman test runs across all GANs. Two-sided Wilcoxon
signed-rank tests follow for every pair, with Holm's correction over the
pairs of one metric and the matched-pairs rank-biserial correlation as the
effect size. Baselines are summarized but left out of the tests, because
they differ from the GANs by construction.

Several training seeds of one GAN are model folders named
``<model>+seed<k>`` in the same root (train.py ``--checkpoint_dir`` and
complete.py ``--out`` choose the folders). With ``seeds=True`` the runs of
one GAN are grouped: between GANs, each image's value is the mean over the
GAN's runs, and the runs of one GAN are also compared pairwise, so the
seed-to-seed spread sits beside the between-GAN differences.

Figures are drawn on matplotlib's Agg canvas directly, so importing or
running this module never switches the pyplot backend of the caller.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from study import provenance
from study.layout import Layout, completion_source

log = logging.getLogger(__name__)

# Display names of the study's GANs that the model registry may not list.
KNOWN_LABELS = {
    "dcgan": "NSGAN",
    "wgan-gp": "WGAN-GP",
    "dcgan_sim": "NSGAN_SIM",
    "dcgan-gp": "NSGAN-GP",
    "dcgan-cons": "NSGAN-CONS",
    "wgan": "WGAN",
    "dragan": "DRAGAN",
    "dragan_bn": "DRAGAN_BN",
}
BASELINE_PREFIX = "baseline_"
SEED_SUFFIX = re.compile(r"^(?P<gan>.+)\+seed(?P<seed>\d+)$")
FILL_METRICS = ("l1_blended", "psnr_blended", "ssim_blended", "l1_overlay", "psnr_overlay", "ssim_overlay")
METRIC_LABELS = {
    "distance": "cosine distance (original vs inpainting)",
    "gap": "generalization gap d(G(z), test) - d(G(z), nearest train)",
    "l1_blended": "mean absolute error, blended (0-255)",
    "psnr_blended": "PSNR, blended (dB)",
    "ssim_blended": "SSIM, blended",
    "l1_overlay": "mean absolute error, overlay (0-255)",
    "psnr_overlay": "PSNR, overlay (dB)",
    "ssim_overlay": "SSIM, overlay",
}
DISTANCE_AXIS_LABEL = METRIC_LABELS["distance"]
GAP_AXIS_LABEL = METRIC_LABELS["gap"]
# Resampled values drawn at a time, which bounds the bootstrap's memory.
BOOTSTRAP_BATCH_VALUES = 2_000_000
GAN_COLOUR = "tab:blue"
BASELINE_COLOUR = "tab:orange"
BETWEEN_GANS = "between GANs"
BETWEEN_SEEDS = "between seeds of "


@functools.lru_cache(maxsize=1)
def _registered_labels() -> dict[str, str]:
    # Importing the ``models`` package loads only the registry and the zoo,
    # not TensorFlow (tests/test_analysis.py checks this).
    try:
        import models
    except ImportError as exc:
        log.debug("model registry not importable (%s); using the built-in labels", exc)
        return {}
    return {name: models.get_spec(name).label for name in models.model_names()}


def is_baseline(model: str) -> bool:
    return model.startswith(BASELINE_PREFIX)


def split_run(model: str) -> tuple[str, int | None]:
    """Return ``(gan, seed)`` of a model folder name: ``dcgan+seed2`` gives ``("dcgan", 2)``."""
    match = SEED_SUFFIX.match(model)
    if match:
        return match.group("gan"), int(match.group("seed"))
    return model, None


def display_label(model: str) -> str:
    """Return the plot label of ``model``: its registry label, a known label, or the name itself.

    Baselines get ``baseline: <description>`` and seed runs ``<label> seed <k>``.
    """
    if is_baseline(model):
        from study.baselines import baseline_label

        return baseline_label(model)
    gan, seed = split_run(model)
    label = _registered_labels().get(gan) or KNOWN_LABELS.get(gan, gan)
    return label if seed is None else f"{label} seed {seed}"


# --- inputs --------------------------------------------------------------------

def _numeric(values: pd.Series, source_name: str) -> pd.Series:
    """Convert ``values`` to float and warn about non-empty entries that are not numbers."""
    numbers = pd.to_numeric(values, errors="coerce")
    invalid = int((numbers.isna() & values.notna()).sum())
    if invalid:
        log.warning("%d entry(ies) of %s are not numbers and are left out", invalid, source_name)
    return numbers


def _empty_values() -> pd.DataFrame:
    return pd.DataFrame({"model": pd.Series(dtype=str), "idx": pd.Series(dtype=int),
                         "metric": pd.Series(dtype=str), "value": pd.Series(dtype=float)})


def load_distances(path: Path) -> pd.DataFrame:
    """Return the comparison as long rows ``model, idx, distance`` in column order.

    Raises FileNotFoundError naming the command that writes the file, and
    ValueError when it has no ``idx`` column or no model column.
    """
    if not path.exists():
        root = path.parent
        raise FileNotFoundError(f"cosine distances not found: {path}. "
                                f"Make them with: python facenet/gans_compare.py --root {root}")
    table = pd.read_csv(path)
    if "idx" not in table.columns:
        raise ValueError(f"{path} has no 'idx' column (columns: {', '.join(table.columns)})")
    models = [column for column in table.columns if column != "idx"]
    if not models:
        raise ValueError(f"{path} has no model columns besides 'idx'")
    rows = table.melt(id_vars="idx", value_vars=models, var_name="model", value_name="distance")
    rows["distance"] = _numeric(rows["distance"], str(path))
    return rows.dropna(subset=["distance"]).reset_index(drop=True)


def load_underfit(underfit_dir: Path) -> pd.DataFrame:
    """Return long rows ``model, idx, metric, value`` from every ``<model>/underfit.csv``.

    Every model contributes its ``gap``. Baselines also contribute their
    ``d_test`` as metric ``distance``. Excluded images (NaN) are left out.
    """
    frames = []
    for path in sorted(underfit_dir.glob("*/underfit.csv")):
        model = path.parent.name
        table = pd.read_csv(path)
        missing = [column for column in ("idx", "gap") if column not in table.columns]
        if missing:
            raise ValueError(f"{path} lacks column(s) {', '.join(missing)}; rerun underfit.py "
                             f"--model {model} --overwrite")
        columns = {"gap": "gap"}
        if is_baseline(model) and "d_test" in table.columns:
            columns["distance"] = "d_test"
        for metric, column in columns.items():
            frames.append(pd.DataFrame({"model": model, "idx": table["idx"], "metric": metric,
                                        "value": _numeric(table[column], str(path))}))
    if not frames:
        return _empty_values()
    return pd.concat(frames, ignore_index=True).dropna(subset=["value"]).reset_index(drop=True)


def load_gaps(underfit_dir: Path) -> pd.DataFrame:
    """Return long rows ``model, idx, gap`` from every ``<model>/underfit.csv``."""
    rows = load_underfit(underfit_dir)
    rows = rows[rows["metric"] == "gap"]
    return rows.rename(columns={"value": "gap"})[["model", "idx", "gap"]].reset_index(drop=True)


def load_fill_quality(completions_root: Path) -> pd.DataFrame:
    """Return long rows ``model, idx, metric, value`` from every ``<model>/test/fill_quality.csv``.

    Returns an empty frame when no model has the file. Metrics missing from a
    file are left out of that model with a warning.
    """
    frames = []
    for path in sorted(completions_root.glob("*/test/fill_quality.csv")):
        model = path.parent.parent.name
        table = pd.read_csv(path)
        if "idx" not in table.columns:
            log.warning("%s has no 'idx' column and is ignored", path)
            continue
        absent = [metric for metric in FILL_METRICS if metric not in table.columns]
        if absent:
            log.warning("%s lacks the column(s) %s", path, ", ".join(absent))
        for metric in FILL_METRICS:
            if metric in table.columns:
                frames.append(pd.DataFrame({"model": model, "idx": table["idx"], "metric": metric,
                                            "value": _numeric(table[metric], str(path))}))
    if not frames:
        return _empty_values()
    return pd.concat(frames, ignore_index=True).dropna(subset=["value"]).reset_index(drop=True)


def load_same_identity(underfit_dir: Path) -> dict[str, float]:
    """Return the share of images whose nearest training face is the same person, per model."""
    rates = {}
    for path in sorted(underfit_dir.glob("*/underfit.csv")):
        table = pd.read_csv(path, dtype={"same_identity": str})
        if "same_identity" not in table.columns:
            continue
        known = table["same_identity"].dropna().str.lower()
        known = known[known.isin(["true", "false"])]
        if len(known):
            rates[path.parent.name] = float((known == "true").mean())
    return rates


def read_protocol(layout: Layout) -> str:
    """Return the embedding protocol recorded by the comparison or underfit stages, or 'unknown'."""
    records = [layout.root / "gan_distances.inputs.json",
               *sorted((layout.root / "underfit").glob("*/inputs.json"))]
    found = []
    for record in records:
        if record.is_file():
            protocol = provenance.read_json(record).get("protocol")
            if protocol and protocol not in found:
                found.append(protocol)
    if len(found) > 1:
        log.warning("the inputs use several embedding protocols (%s); their distances are not "
                    "comparable", ", ".join(found))
    return " / ".join(found) if found else "unknown"


def load_missed_faces(layout: Layout, protocol: str) -> dict[str, int]:
    """Return, per GAN, the database images whose original or inpainting had no detected face.

    The embedding stage embeds such an image whole instead of a face crop,
    so its cosine distance measures something else. The count goes next to
    the distances in the summary and the figures. Returns an empty dict when
    the protocol is unknown or mixed, or runs no detector (alignment none).
    """
    if protocol == "unknown" or " / " in protocol or protocol.split("-")[1:2] == ["none"]:
        return {}
    original_file = layout.embeddings / f"db_original__{protocol}.npz"
    if not original_file.is_file():
        return {}

    def found_by_key(path: Path) -> dict[str, bool]:
        with np.load(path, allow_pickle=False) as data:
            return dict(zip(data["keys"].astype(str), data["face_found"].astype(bool)))

    originals = found_by_key(original_file)
    missed = {}
    for path in sorted(layout.embeddings.glob(f"db_*__{protocol}.npz")):
        model = path.name[len("db_"):-len(f"__{protocol}.npz")]
        if model == "original":
            continue
        missed[model] = sum(1 for key, found in found_by_key(path).items()
                            if not (found and originals.get(key, False)))
    return missed


def count_test_images(layout: Layout, values: pd.DataFrame) -> int:
    """Return the size of the split's test list, or the number of distinct images in ``values``."""
    test_list = layout.split_dir / "test.txt"
    if test_list.is_file():
        return len(test_list.read_text().split())
    return int(values["idx"].nunique())


# --- statistics ------------------------------------------------------------------

def bootstrap_ci(values, n_resamples: int = 10000, seed: int = 0,
                 confidence: float = 0.95) -> tuple[float, float]:
    """Return the percentile bootstrap confidence interval of the mean of ``values``.

    NaN values are ignored. One value gives a zero-width interval, none gives
    ``(nan, nan)``. With one NumPy version, the same values, resample count
    and seed give the same interval.
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    batch = max(1, BOOTSTRAP_BATCH_VALUES // values.size)
    for start in range(0, n_resamples, batch):
        count = min(batch, n_resamples - start)
        picks = rng.integers(0, values.size, size=(count, values.size))
        means[start:start + count] = values[picks].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def holm_adjust(p_values) -> np.ndarray:
    """Return Holm's step-down adjusted p-values, in the input order.

    The i-th smallest of m p-values becomes the running maximum of
    ``(m - j + 1) * p_(j)`` over ``j <= i``, capped at 1. NaN entries stay
    NaN and do not count in m.
    """
    p_values = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full(p_values.shape, np.nan)
    present = np.flatnonzero(~np.isnan(p_values))
    m = present.size
    order = present[np.argsort(p_values[present], kind="stable")]
    running = 0.0
    for rank, position in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[position]))
        adjusted[position] = running
    return adjusted


def rank_biserial(a, b) -> float:
    """Return the matched-pairs rank-biserial correlation of ``a - b``, in [-1, 1].

    Zero differences are dropped, as in the Wilcoxon test, and the absolute
    differences are ranked with ties averaged. The result is
    ``(R+ - R-) / (R+ + R-)``, the rank sums of the positive and negative
    differences: +1 when every pair has ``a > b``. NaN when all differences
    are zero.
    """
    from scipy.stats import rankdata

    differences = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    differences = differences[differences != 0]
    if differences.size == 0:
        return float("nan")
    ranks = rankdata(np.abs(differences))
    positive = ranks[differences > 0].sum()
    negative = ranks[differences < 0].sum()
    return float((positive - negative) / (positive + negative))


def _describe(values: np.ndarray, prefix: str, n_resamples: int, seed: int) -> dict:
    low, high = bootstrap_ci(values, n_resamples, seed)
    empty = values.size == 0
    return {
        f"{prefix}_n": int(values.size),
        f"{prefix}_mean": float("nan") if empty else float(np.mean(values)),
        f"{prefix}_median": float("nan") if empty else float(np.median(values)),
        f"{prefix}_ci_low": low,
        f"{prefix}_ci_high": high,
    }


def metrics_present(values: pd.DataFrame) -> list[str]:
    """Return distance and gap, then the fill-quality metrics that have any value."""
    present = set(values["metric"])
    return ["distance", "gap"] + [metric for metric in FILL_METRICS if metric in present]


def summarize(values: pd.DataFrame, models: list[str], n_resamples: int = 10000, seed: int = 0,
              same_identity: dict[str, float] | None = None,
              missed_faces: dict[str, int] | None = None) -> pd.DataFrame:
    """Return one row per model with n, mean, median and 95% CI of every metric.

    ``missed_faces`` (see :func:`load_missed_faces`) becomes the column
    ``distance_no_face_n``.
    """
    metrics = metrics_present(values)
    rows = []
    for model in models:
        gan, run_seed = split_run(model)
        row = {"model": model, "label": display_label(model),
               "kind": "baseline" if is_baseline(model) else "gan",
               "gan": model if is_baseline(model) else gan,
               "seed": "" if run_seed is None else run_seed}
        for metric in metrics:
            selected = (values["model"] == model) & (values["metric"] == metric)
            row.update(_describe(values.loc[selected, "value"].to_numpy(dtype=np.float64),
                                 metric, n_resamples, seed))
        if same_identity is not None:
            row["same_identity_rate"] = same_identity.get(model, float("nan"))
        if missed_faces:
            row["distance_no_face_n"] = missed_faces.get(model, pd.NA)
        row.update(bootstrap_resamples=n_resamples, bootstrap_seed=seed)
        rows.append(row)
    return pd.DataFrame(rows)


def model_order(distances: pd.DataFrame, others: pd.DataFrame) -> list[str]:
    """Return the GANs in the order of the comparison's columns, then the other GANs sorted,
    then the baselines in the order of study.baselines.BASELINES."""
    order = [model for model in dict.fromkeys(distances["model"]) if not is_baseline(model)]
    rest = set(others["model"]) - set(order)
    order += sorted(model for model in rest if not is_baseline(model))
    from study.baselines import BASELINES

    known = [baseline.source for baseline in BASELINES if baseline.source in rest]
    return order + known + sorted(model for model in rest if is_baseline(model) and model not in known)


def paired_table(values: pd.DataFrame, metric: str, models: list[str]) -> pd.DataFrame:
    """Return images x models of ``metric``, keeping only images with a value for every model."""
    selected = values[(values["metric"] == metric) & values["model"].isin(models)]
    if selected.empty:
        return pd.DataFrame(columns=models, dtype=float)
    wide = selected.pivot_table(index="idx", columns="model", values="value", aggfunc="first")
    wide = wide.reindex(columns=models)
    return wide.dropna(how="any")


def friedman_test(wide: pd.DataFrame) -> dict:
    """Return the Friedman test across the columns of ``wide`` (images x models)."""
    from scipy.stats import friedmanchisquare

    result = {"n_images": len(wide), "n_models": wide.shape[1], "statistic": float("nan"),
              "p_value": float("nan"), "note": ""}
    if wide.shape[1] < 3:
        result["note"] = "needs at least 3 models; see the pairwise Wilcoxon test"
    elif len(wide) < 2:
        result["note"] = "needs at least 2 images with a value for every model"
    elif (wide.nunique(axis=1) == 1).all():
        result["note"] = "every image has equal values for all models"
    else:
        statistic, p_value = friedmanchisquare(*[wide[column].to_numpy() for column in wide.columns])
        result.update(statistic=float(statistic), p_value=float(p_value))
    return result


def wilcoxon_test(a: np.ndarray, b: np.ndarray) -> dict:
    """Return the two-sided Wilcoxon signed-rank test of paired ``a`` and ``b`` and its effect size."""
    from scipy.stats import wilcoxon

    differences = a - b
    nonzero = int(np.count_nonzero(differences))
    result = {"n_images": int(a.size), "n_nonzero": nonzero,
              "median_difference": float(np.median(differences)) if a.size else float("nan"),
              "wilcoxon_statistic": float("nan"), "p_value": float("nan"),
              "rank_biserial": rank_biserial(a, b), "note": ""}
    if nonzero == 0:
        result["note"] = "all paired differences are zero" if a.size else "no paired images"
        return result
    with warnings.catch_warnings():
        # SciPy warns that the normal approximation is used when ties or zeros prevent the exact test.
        warnings.simplefilter("ignore", UserWarning)
        test = wilcoxon(a, b, zero_method="wilcox", alternative="two-sided")
    result.update(wilcoxon_statistic=float(test.statistic), p_value=float(test.pvalue))
    return result


def compare_group(values: pd.DataFrame, metric: str, models: list[str], comparison: str
                  ) -> tuple[dict, list[dict]]:
    """Return the Friedman result and the Holm-corrected pairwise Wilcoxon rows of one family.

    All tests of a family use the images that have a value for every model
    of ``models``, so the pairwise tests follow up the omnibus test on the
    same images.
    """
    wide = paired_table(values, metric, models)
    omnibus = {"metric": metric, "comparison": comparison, "models": ";".join(models),
               **friedman_test(wide)}
    pairs = []
    for first in range(len(models)):
        for second in range(first + 1, len(models)):
            a_name, b_name = models[first], models[second]
            a = wide[a_name].to_numpy(dtype=np.float64)
            b = wide[b_name].to_numpy(dtype=np.float64)
            pairs.append({"metric": metric, "comparison": comparison,
                          "model_a": a_name, "model_b": b_name,
                          "label_a": display_label(a_name), "label_b": display_label(b_name),
                          "median_a": float(np.median(a)) if a.size else float("nan"),
                          "median_b": float(np.median(b)) if b.size else float("nan"),
                          **wilcoxon_test(a, b)})
    adjusted = holm_adjust([pair["p_value"] for pair in pairs])
    family = int(np.count_nonzero(~np.isnan(adjusted)))
    for pair, p_holm in zip(pairs, adjusted):
        pair.update(p_holm=float(p_holm), holm_family_size=family)
    return omnibus, pairs


def seed_means(values: pd.DataFrame, runs: dict[str, list[str]]) -> pd.DataFrame:
    """Return values per GAN, each image's value averaged over the GAN's runs that have it.

    Only images with a value in every run of the GAN are kept, so each GAN
    mean weighs its runs equally.
    """
    frames = []
    for gan, members in runs.items():
        for metric in values["metric"].unique():
            wide = paired_table(values, metric, members)
            if wide.empty:
                continue
            frames.append(pd.DataFrame({"model": gan, "idx": wide.index, "metric": metric,
                                        "value": wide.mean(axis=1).to_numpy()}))
    if not frames:
        return _empty_values()
    return pd.concat(frames, ignore_index=True)


def seed_spread(summary: pd.DataFrame, runs: dict[str, list[str]], metrics: list[str]) -> pd.DataFrame:
    """Return per GAN and metric the spread of the run means beside the spread between GANs."""
    rows = []
    by_model = summary.set_index("model")
    for metric in metrics:
        gan_means = {gan: by_model.loc[members, f"{metric}_mean"].astype(float).mean()
                     for gan, members in runs.items()}
        spread_between = np.array([value for value in gan_means.values() if not np.isnan(value)])
        for gan, members in runs.items():
            run_means = by_model.loc[members, f"{metric}_mean"].to_numpy(dtype=np.float64)
            run_means = run_means[~np.isnan(run_means)]
            rows.append({
                "metric": metric, "gan": gan, "label": display_label(gan), "runs": ";".join(members),
                "n_runs": int(run_means.size), "mean_of_run_means": gan_means[gan],
                "seed_sd": float(np.std(run_means, ddof=1)) if run_means.size > 1 else float("nan"),
                "seed_min": float(run_means.min()) if run_means.size else float("nan"),
                "seed_max": float(run_means.max()) if run_means.size else float("nan"),
                "between_gan_sd": float(np.std(spread_between, ddof=1)) if spread_between.size > 1
                else float("nan"),
                "between_gan_range": float(np.ptp(spread_between)) if spread_between.size else float("nan"),
            })
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame["seed_range"] = frame["seed_max"] - frame["seed_min"]
    return frame


# --- figures ---------------------------------------------------------------------

# Sized for a full-width figure in a two-column paper (about 7 inches) with
# 7-9 pt text, printed at 300 dpi. Models are rows, so long labels stay
# horizontal and readable.
FIGURE_WIDTH = 7.0
FIGURE_DPI = 300
FONT_SIZE = 8
ROW_HEIGHT = 0.24
BASELINE_NOTE = ("Baselines, on the same test images: test image = the test face itself (generalizing); "
                 "k% copy = the hole filled with k% of the nearest training face in pixel space; "
                 "hole copy = 100% (overfitting); train image = that training face whole.")


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=FIGURE_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save_figure(figure, path: Path) -> Path:
    """Write ``figure`` as PNG through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.png")
    figure.savefig(tmp, format="png", bbox_inches="tight")
    os.replace(tmp, path)
    return path


def plot_label(model: str) -> str:
    """Return the short label of ``model`` in figures, where a caption explains the baselines."""
    if is_baseline(model):
        from study.baselines import baseline_short_label

        return baseline_short_label(model)
    return display_label(model)


def _colour(model: str) -> str:
    return BASELINE_COLOUR if is_baseline(model) else GAN_COLOUR


def _model_rows(axes, models: list[str], counts: list | None = None) -> None:
    """Label the rows of ``axes`` with the models, first at the top, and mark where baselines begin.

    ``counts`` go into the row labels; panels that share their rows pass
    None and write their own counts (see :func:`_bar_panel`).
    """
    positions = np.arange(len(models))
    axes.set_yticks(positions)
    labels = [plot_label(model) for model in models]
    if counts is not None:
        labels = [f"{label} (n={count})" for label, count in zip(labels, counts)]
    axes.set_yticklabels(labels, fontsize=FONT_SIZE - 1)
    axes.set_ylim(len(models) - 0.5, -0.5)
    first_baseline = next((row for row, model in enumerate(models) if is_baseline(model)), None)
    if first_baseline:
        axes.axhline(first_baseline - 0.5, color="grey", linestyle="--", linewidth=0.8)
    axes.tick_params(axis="x", labelsize=FONT_SIZE)
    axes.grid(axis="x", alpha=0.3)


def _legend(figure, models: list[str]) -> None:
    from matplotlib.patches import Patch

    handles = []
    if not all(is_baseline(model) for model in models):
        handles.append(Patch(facecolor=GAN_COLOUR, alpha=0.8, label="GAN"))
    if any(is_baseline(model) for model in models):
        handles.append(Patch(facecolor=BASELINE_COLOUR, alpha=0.8, hatch="//", label="baseline"))
    figure.legend(handles=handles, fontsize=FONT_SIZE - 1, loc="outside upper right", ncols=len(handles),
                  frameon=False)


def _caption(figure, text: str) -> None:
    import textwrap

    figure.supxlabel(textwrap.fill(text, 150), fontsize=FONT_SIZE - 1, x=0.0, ha="left")


def plot_distance_boxes(distances: pd.DataFrame, models: list[str], path: Path,
                        protocol: str = "unknown", n_test: int | None = None,
                        missed_faces: dict[str, int] | None = None) -> Path:
    """Write a box plot of the per-image cosine distances, one row per model, baselines last.

    ``missed_faces`` adds each model's count of images without a detected
    face to its row label.
    """
    figure = _new_figure(FIGURE_WIDTH, 1.4 + ROW_HEIGHT * len(models))
    axes = figure.add_subplot()
    groups = [distances.loc[distances["model"] == model, "distance"].to_numpy() for model in models]
    filled = [row for row, values in enumerate(groups) if values.size]
    if filled:
        boxes = axes.boxplot([groups[row] for row in filled], positions=filled, widths=0.6,
                             orientation="horizontal", patch_artist=True,
                             medianprops={"color": "black"}, flierprops={"markersize": 2})
        for row, box in zip(filled, boxes["boxes"]):
            box.set_facecolor(_colour(models[row]))
            box.set_alpha(0.8)
            if is_baseline(models[row]):
                box.set_hatch("//")
    for row, values in enumerate(groups):
        if not values.size:
            axes.text(0.0, row, " no data", va="center", fontsize=FONT_SIZE - 1, color="grey")
    missed_faces = missed_faces or {}
    _model_rows(axes, models, [f"{values.size}; {missed_faces[model]} no face" if model in missed_faces
                               else values.size for model, values in zip(models, groups)])
    axes.set_xlabel(DISTANCE_AXIS_LABEL + ", 1 - cos", fontsize=FONT_SIZE)
    n_images = n_test if n_test is not None else distances["idx"].nunique()
    figure.suptitle(f"Cosine distance between test face and inpainting\n{n_images} test images, "
                    f"embedding protocol {protocol}", fontsize=FONT_SIZE + 1, x=0.0, ha="left")
    _legend(figure, models)
    caption = ("Boxes: quartiles and median; whiskers: 1.5 IQR; n: images with a value. GANs: test face "
               "vs final blended inpainting. ")
    if missed_faces:
        caption += ("no face: images where the detector found no face in the original or the "
                    "inpainting, so the whole image was embedded. ")
    if any(is_baseline(model) for model in models):
        caption += BASELINE_NOTE
    _caption(figure, caption)
    return _save_figure(figure, path)


def _bar_panel(axes, summary: pd.DataFrame, prefix: str, xlabel: str, title: str,
               run_points: dict[str, list[tuple[float, float, float]]] | None = None) -> None:
    from matplotlib.transforms import blended_transform_factory

    means = summary[f"{prefix}_mean"].to_numpy(dtype=np.float64)
    lows = summary[f"{prefix}_ci_low"].to_numpy(dtype=np.float64)
    highs = summary[f"{prefix}_ci_high"].to_numpy(dtype=np.float64)
    models = list(summary["model"])
    for row, (model, mean, low, high) in enumerate(zip(models, means, lows, highs)):
        if np.isnan(mean):
            axes.text(0.0, row, " no data", va="center", fontsize=FONT_SIZE - 1, color="grey")
            continue
        axes.barh(row, mean, height=0.6, color=_colour(model), alpha=0.8,
                  hatch="//" if is_baseline(model) else None)
        if run_points and run_points.get(model):
            # One dot per training seed with its own 95% CI, spread across the bar.
            points = run_points[model]
            offsets = np.linspace(-0.2, 0.2, len(points)) if len(points) > 1 else [0.0]
            for offset, (run_mean, run_low, run_high) in zip(offsets, points):
                axes.errorbar(run_mean, row + offset, xerr=[[run_mean - run_low], [run_high - run_mean]],
                              fmt="o", color="black", markersize=2.5, capsize=1.5, linewidth=0.7)
        else:
            axes.errorbar(mean, row, xerr=[[mean - low], [high - mean]], fmt="none",
                          ecolor="black", capsize=2.5, linewidth=0.8)
    axes.axvline(0.0, color="black", linewidth=0.8)
    # The two panels share their row labels, so each writes its own image counts.
    _model_rows(axes, models)
    # Widen the axis so the counts sit in an empty margin, clear of bars and error bars.
    low, high = axes.get_xlim()
    axes.set_xlim(low, high + 0.15 * (high - low))
    rows_at_right = blended_transform_factory(axes.transAxes, axes.transData)
    for row, count in enumerate(summary[f"{prefix}_n"]):
        axes.text(0.99, row, f"n={count}", transform=rows_at_right, ha="right", va="center",
                  fontsize=FONT_SIZE - 2, color="dimgrey")
    axes.set_xlabel(xlabel, fontsize=FONT_SIZE)
    axes.set_title(title, fontsize=FONT_SIZE + 1)


def plot_joint_bars(summary: pd.DataFrame, path: Path, n_resamples: int, seed: int,
                    protocol: str = "unknown", n_test: int | None = None,
                    run_points: dict | None = None) -> Path:
    """Write side-by-side bar panels of the mean distance and mean gap with 95% CIs."""
    figure = joint_bar_figure(summary, n_resamples, seed, protocol, n_test, run_points)
    return _save_figure(figure, path)


def joint_bar_figure(summary: pd.DataFrame, n_resamples: int, seed: int, protocol: str = "unknown",
                     n_test: int | None = None, run_points: dict | None = None):
    """Return the figure :func:`plot_joint_bars` saves."""
    figure = _new_figure(FIGURE_WIDTH, 1.6 + ROW_HEIGHT * len(summary))
    left, right = figure.subplots(1, 2, sharey=True)
    _bar_panel(left, summary, "distance", DISTANCE_AXIS_LABEL, "Mean cosine distance",
               run_points.get("distance") if run_points else None)
    _bar_panel(right, summary, "gap", "gap d(G(z), test) - d(G(z), nearest train)",
               "Mean gap (> 0: closer to a training face)",
               run_points.get("gap") if run_points else None)
    right.tick_params(axis="y", labelleft=False)
    _legend(figure, list(summary["model"]))
    images = f"{n_test} test images, " if n_test is not None else ""
    figure.suptitle(f"Mean cosine distance and generalization gap per model\n{images}embedding "
                    f"protocol {protocol}", fontsize=FONT_SIZE + 1, x=0.0, ha="left")
    caption = (f"Error bars: 95% percentile bootstrap CI of the mean ({n_resamples} resamples, seed {seed}); "
               "n: images with a value. ")
    if run_points:
        caption += "Bars: mean over training seeds; dots: one seed each, with its own CI. "
    if any(is_baseline(model) for model in summary["model"]):
        caption += BASELINE_NOTE
    _caption(figure, caption)
    return figure


# --- the stage -------------------------------------------------------------------

@dataclass
class AnalysisResult:
    summary: pd.DataFrame
    summary_path: Path
    boxplot_path: Path
    bars_path: Path
    pairwise: pd.DataFrame | None = None
    pairwise_path: Path | None = None
    friedman: pd.DataFrame | None = None
    friedman_path: Path | None = None
    seeds_path: Path | None = None
    report_path: Path | None = None


def group_runs(models: list[str]) -> dict[str, list[str]]:
    """Return the GAN model folders grouped by GAN: ``dcgan`` and ``dcgan+seed1`` form one group."""
    runs: dict[str, list[str]] = {}
    for model in models:
        if not is_baseline(model):
            runs.setdefault(split_run(model)[0], []).append(model)
    return runs


def _with_values(values: pd.DataFrame, metric: str, models: list[str]) -> list[str]:
    """Return the models that have any value of ``metric``, so a metric that only some GANs
    report (fill quality) is compared among those."""
    present = set(values.loc[values["metric"] == metric, "model"])
    return [model for model in models if model in present]


def _paired_comparisons(values: pd.DataFrame, models: list[str], seeds: bool
                        ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return the Friedman and pairwise tables between GANs (and between seeds with ``seeds``)."""
    omnibus_rows, pair_rows = [], []
    metrics = metrics_present(values)
    gans = [model for model in models if not is_baseline(model)]
    if seeds:
        runs = group_runs(gans)
        pooled = seed_means(values, runs)
        for metric in metrics:
            omnibus, pairs = compare_group(pooled, metric, _with_values(pooled, metric, list(runs)),
                                           BETWEEN_GANS)
            omnibus_rows.append(omnibus)
            pair_rows.extend(pairs)
            seed_pairs = []
            for gan, members in runs.items():
                if len(members) > 1:
                    omnibus, pairs = compare_group(values, metric, members, BETWEEN_SEEDS + gan)
                    omnibus_rows.append(omnibus)
                    seed_pairs.extend(pairs)
            pair_rows.extend(seed_pairs)
    else:
        for metric in metrics:
            omnibus, pairs = compare_group(values, metric, _with_values(values, metric, gans), BETWEEN_GANS)
            omnibus_rows.append(omnibus)
            pair_rows.extend(pairs)
    pairwise_columns = ["metric", "comparison", "model_a", "model_b", "label_a", "label_b", "n_images",
                        "n_nonzero", "median_a", "median_b", "median_difference", "wilcoxon_statistic",
                        "p_value", "p_holm", "holm_family_size", "rank_biserial", "note"]
    return pd.DataFrame(omnibus_rows), pd.DataFrame(pair_rows, columns=pairwise_columns)


def run_analysis(root: str | Path, n_resamples: int = 10000, seed: int = 0,
                 clipping: str | None = None, mask: str | None = None, seeds: bool = False,
                 report: bool = True) -> AnalysisResult:
    """Write the figures, ``results/summary.csv``, ``pairwise.csv`` and ``friedman.csv``.

    With ``seeds``, also ``results/seeds.csv``. With ``report``, also
    ``report/index.html`` (see :mod:`study.report`). ``clipping`` and
    ``mask`` default to the completions the image database was built from
    (see :func:`study.layout.completion_source`).
    """
    layout = Layout(root)
    requested = {"clipping": clipping, "mask": mask}
    clipping, mask = completion_source(layout, clipping, mask)
    underfit = load_underfit(layout.root / "underfit")
    if layout.gan_distances.exists() or underfit.empty:
        distances = load_distances(layout.gan_distances)
    else:
        log.warning("%s not found, so the GANs have no cosine distances; make it with: python "
                    "facenet/gans_compare.py --root %s", layout.gan_distances, root)
        distances = pd.DataFrame({"idx": pd.Series(dtype=int), "model": pd.Series(dtype=str),
                                  "distance": pd.Series(dtype=float)})
    fill = load_fill_quality(layout.completions("_", clipping, mask).parent.parent)
    if underfit.empty:
        log.warning("no generalization gaps found under %s; run underfit.py first. "
                    "The gap statistics stay empty", layout.root / "underfit")
    values = pd.concat([distances.rename(columns={"distance": "value"}).assign(metric="distance"),
                        underfit, fill], ignore_index=True)[["model", "idx", "metric", "value"]]
    models = model_order(distances, values)
    gap_models = set(underfit.loc[underfit["metric"] == "gap", "model"])
    for model in models:
        if is_baseline(model):
            continue
        if model not in set(distances["model"]):
            log.warning("%s has underfit results but no cosine distances in %s",
                        model, layout.gan_distances)
        elif gap_models and model not in gap_models:
            log.warning("%s has cosine distances but no underfit results", model)
    runs = group_runs(models)
    if seeds and not any(len(members) > 1 for members in runs.values()):
        log.warning("--seeds found no GAN with more than one run (model folders <model>+seed<k>); "
                    "there is no seed-to-seed spread to show")
    elif not seeds and any(len(members) > 1 for members in runs.values()):
        log.info("some GANs have several training seeds (<model>+seed<k>); pass --seeds to group them")

    provenance.record(layout.results, "analyze",
                      {"root": str(root), "n_resamples": n_resamples, "seed": seed, "models": models,
                       "clipping": clipping, "mask": mask, "seeds": seeds})
    same_identity = load_same_identity(layout.root / "underfit")
    protocol = read_protocol(layout)
    missed_faces = load_missed_faces(layout, protocol)
    summary = summarize(values, models, n_resamples, seed, same_identity or None, missed_faces)
    summary_path = provenance.write_text_atomic(layout.results / "summary.csv", summary.to_csv(index=False))
    friedman, pairwise = _paired_comparisons(values, models, seeds)
    pairwise_path = provenance.write_text_atomic(layout.results / "pairwise.csv",
                                                 pairwise.to_csv(index=False))
    friedman_path = provenance.write_text_atomic(layout.results / "friedman.csv",
                                                 friedman.to_csv(index=False))

    seeds_path, run_points, bar_summary = None, None, summary
    if seeds:
        spread = seed_spread(summary, runs, metrics_present(values))
        seeds_path = provenance.write_text_atomic(layout.results / "seeds.csv", spread.to_csv(index=False))
        bar_summary, run_points = _seed_bars(summary, runs)

    n_test = count_test_images(layout, values)
    distance_rows = values[values["metric"] == "distance"].rename(columns={"value": "distance"})
    boxplot_path = plot_distance_boxes(distance_rows, models, layout.figures / "sim_distances.png",
                                       protocol, n_test, missed_faces)
    bars_path = plot_joint_bars(bar_summary, layout.figures / "joint_bar.png", n_resamples, seed,
                                protocol, n_test, run_points)
    log.info("analysis of %d model(s) written to %s and %s", len(models), layout.results, layout.figures)
    result = AnalysisResult(summary, summary_path, boxplot_path, bars_path, pairwise, pairwise_path,
                            friedman, friedman_path, seeds_path)
    if report:
        from study.report import build_report

        result.report_path = build_report(root, **requested)
    return result


def _seed_bars(summary: pd.DataFrame, runs: dict[str, list[str]]) -> tuple[pd.DataFrame, dict]:
    """Return the bar rows per GAN (mean over its runs' means) plus baselines, and the run dots."""
    by_model = summary.set_index("model")
    rows, points = [], {"distance": {}, "gap": {}}
    for gan, members in runs.items():
        row = {"model": gan, "label": display_label(gan)}
        for metric in ("distance", "gap"):
            run_means = by_model.loc[members, f"{metric}_mean"].to_numpy(dtype=np.float64)
            present = ~np.isnan(run_means)
            row[f"{metric}_mean"] = float(run_means[present].mean()) if present.any() else float("nan")
            row[f"{metric}_n"] = int(by_model.loc[members, f"{metric}_n"].min())
            row[f"{metric}_ci_low"] = row[f"{metric}_ci_high"] = row[f"{metric}_mean"]
            points[metric][gan] = [(by_model.loc[member, f"{metric}_mean"],
                                    by_model.loc[member, f"{metric}_ci_low"],
                                    by_model.loc[member, f"{metric}_ci_high"])
                                   for member in members if not np.isnan(by_model.loc[member, f"{metric}_mean"])]
        rows.append(row)
    baselines = summary[summary["kind"] == "baseline"]
    bars = pd.concat([pd.DataFrame(rows), baselines], ignore_index=True)
    return bars, points
