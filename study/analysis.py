"""Summary statistics and figures of the comparison and the generalization gap.

Inputs are ``<root>/gan_distances.csv`` (column ``idx`` plus one column of
cosine distances, original vs blended inpainting, per model) and every
``<root>/underfit/<model>/underfit.csv`` (column ``gap``). Confidence
intervals are percentile bootstrap intervals of the mean, drawn with a seeded
NumPy generator so reruns give the same numbers.

Figures are drawn on matplotlib's Agg canvas directly, so importing or
running this module never switches the pyplot backend of the caller.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from study import provenance
from study.layout import Layout

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
DISTANCE_AXIS_LABEL = "cosine distance (original vs inpainting)"
GAP_AXIS_LABEL = "generalization gap d(G(z), test) - d(G(z), nearest train)"
# Resampled values drawn at a time, which bounds the bootstrap's memory.
BOOTSTRAP_BATCH_VALUES = 2_000_000


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


def display_label(model: str) -> str:
    """Return the plot label of ``model``: its registry label, a known label, or the name itself."""
    return _registered_labels().get(model) or KNOWN_LABELS.get(model, model)


# --- inputs --------------------------------------------------------------------

def _numeric(values: pd.Series, source_name: str) -> pd.Series:
    """Convert ``values`` to float and warn about non-empty entries that are not numbers."""
    numbers = pd.to_numeric(values, errors="coerce")
    invalid = int((numbers.isna() & values.notna()).sum())
    if invalid:
        log.warning("%d entry(ies) of %s are not numbers and are left out", invalid, source_name)
    return numbers


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


def load_gaps(underfit_dir: Path) -> pd.DataFrame:
    """Return long rows ``model, idx, gap`` from every ``<model>/underfit.csv``.

    Excluded images (gap NaN) are left out. Returns an empty frame when no
    model has results.
    """
    frames = []
    for path in sorted(underfit_dir.glob("*/underfit.csv")):
        table = pd.read_csv(path)
        missing = [column for column in ("idx", "gap") if column not in table.columns]
        if missing:
            raise ValueError(f"{path} lacks column(s) {', '.join(missing)}; rerun underfit.py "
                             f"--model {path.parent.name} --overwrite")
        frame = pd.DataFrame({"model": path.parent.name, "idx": table["idx"],
                              "gap": _numeric(table["gap"], str(path))})
        frames.append(frame.dropna(subset=["gap"]))
    if not frames:
        return pd.DataFrame({"model": pd.Series(dtype=str), "idx": pd.Series(dtype=int),
                             "gap": pd.Series(dtype=float)})
    return pd.concat(frames, ignore_index=True)


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


def summarize(distances: pd.DataFrame, gaps: pd.DataFrame, models: list[str],
              n_resamples: int = 10000, seed: int = 0) -> pd.DataFrame:
    """Return one row per model with n, mean, median and 95% CI of the distance and the gap."""
    rows = []
    for model in models:
        row = {"model": model, "label": display_label(model)}
        for frame, column in ((distances, "distance"), (gaps, "gap")):
            values = frame.loc[frame["model"] == model, column].to_numpy(dtype=np.float64)
            row.update(_describe(values, column, n_resamples, seed))
        row.update(bootstrap_resamples=n_resamples, bootstrap_seed=seed)
        rows.append(row)
    return pd.DataFrame(rows)


def model_order(distances: pd.DataFrame, gaps: pd.DataFrame) -> list[str]:
    """Return the models in the order of the comparison's columns, then the rest sorted."""
    order = list(dict.fromkeys(distances["model"]))
    return order + sorted(set(gaps["model"]) - set(order))


# --- figures ---------------------------------------------------------------------

def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(figure)
    return figure


def _save_figure(figure, path: Path) -> Path:
    """Write ``figure`` as PNG through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.png")
    figure.savefig(tmp, format="png", bbox_inches="tight")
    os.replace(tmp, path)
    return path


def plot_distance_boxes(distances: pd.DataFrame, models: list[str], path: Path) -> Path:
    """Write a box plot of the per-image cosine distances, one box per model."""
    figure = _new_figure(max(4.0, 1.3 * len(models) + 2.0), 4.5)
    axes = figure.add_subplot()
    groups = [distances.loc[distances["model"] == model, "distance"].to_numpy() for model in models]
    positions = np.arange(1, len(models) + 1)
    filled = [i for i, values in enumerate(groups) if values.size]
    if filled:
        axes.boxplot([groups[i] for i in filled], positions=positions[filled], widths=0.6)
    axes.set_xticks(positions)
    axes.set_xticklabels([f"{display_label(model)}\n(n={values.size})"
                          for model, values in zip(models, groups)])
    axes.set_xlim(0.5, len(models) + 0.5)
    axes.set_ylabel(DISTANCE_AXIS_LABEL)
    n_images = distances["idx"].nunique()
    axes.set_title(f"Per-image cosine distance between original and inpainting ({n_images} test images)")
    axes.grid(axis="y", alpha=0.3)
    return _save_figure(figure, path)


def _bar_panel(axes, summary: pd.DataFrame, prefix: str, ylabel: str, title: str) -> None:
    positions = np.arange(len(summary))
    means = summary[f"{prefix}_mean"].to_numpy(dtype=np.float64)
    lows = summary[f"{prefix}_ci_low"].to_numpy(dtype=np.float64)
    highs = summary[f"{prefix}_ci_high"].to_numpy(dtype=np.float64)
    present = ~np.isnan(means)
    axes.bar(positions[present], means[present], width=0.6, color="tab:blue", alpha=0.8)
    axes.errorbar(positions[present], means[present],
                  yerr=[means[present] - lows[present], highs[present] - means[present]],
                  fmt="none", ecolor="black", capsize=5)
    for position in positions[~present]:
        axes.text(position, 0.0, "no data", ha="center", va="bottom", fontsize=8, color="grey")
    axes.axhline(0.0, color="black", linewidth=0.8)
    axes.set_xticks(positions)
    axes.set_xticklabels([f"{label}\n(n={n})" for label, n in zip(summary["label"], summary[f"{prefix}_n"])])
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(axis="y", alpha=0.3)


def plot_joint_bars(summary: pd.DataFrame, path: Path, n_resamples: int, seed: int) -> Path:
    """Write side-by-side bar panels of the mean distance and mean gap with 95% CIs."""
    figure = _new_figure(max(8.0, 2.2 * len(summary) + 4.0), 4.8)
    left, right = figure.subplots(1, 2)
    _bar_panel(left, summary, "distance", DISTANCE_AXIS_LABEL, "Mean cosine distance")
    _bar_panel(right, summary, "gap", GAP_AXIS_LABEL, "Mean generalization gap (> 0: recall)")
    figure.suptitle(f"Means per GAN with 95% percentile bootstrap confidence intervals "
                    f"({n_resamples} resamples, seed {seed})")
    return _save_figure(figure, path)


# --- the stage -------------------------------------------------------------------

@dataclass
class AnalysisResult:
    summary: pd.DataFrame
    summary_path: Path
    boxplot_path: Path
    bars_path: Path


def run_analysis(root: str | Path, n_resamples: int = 10000, seed: int = 0) -> AnalysisResult:
    """Write the two figures and ``results/summary.csv`` for every model with results."""
    layout = Layout(root)
    distances = load_distances(layout.gan_distances)
    gaps = load_gaps(layout.root / "underfit")
    if gaps.empty:
        log.warning("no generalization gaps found under %s; run underfit.py first. "
                    "The gap statistics stay empty", layout.root / "underfit")
    models = model_order(distances, gaps)
    for model in models:
        if model not in set(distances["model"]):
            log.warning("%s has underfit results but no cosine distances in %s",
                        model, layout.gan_distances)
        elif not gaps.empty and model not in set(gaps["model"]):
            log.warning("%s has cosine distances but no underfit results", model)

    provenance.record(layout.results, "analyze",
                      {"root": str(root), "n_resamples": n_resamples, "seed": seed, "models": models})
    summary = summarize(distances, gaps, models, n_resamples, seed)
    summary_path = layout.results / "summary.csv"
    provenance.write_text_atomic(summary_path, summary.to_csv(index=False))
    boxplot_path = plot_distance_boxes(distances, models, layout.figures / "sim_distances.png")
    bars_path = plot_joint_bars(summary, layout.figures / "joint_bar.png", n_resamples, seed)
    log.info("analysis of %d model(s) written to %s and %s", len(models), layout.results, layout.figures)
    return AnalysisResult(summary, summary_path, boxplot_path, bars_path)
