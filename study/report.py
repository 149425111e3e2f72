"""A static HTML report of one experiment: ``<root>/report/index.html``.

The page is built only from files that earlier stages wrote: the CSVs under
``results/``, ``gan_distances.csv``, every ``underfit/<model>/underfit.csv``,
the figures, the completion images, the baseline images and the training
images named by the split manifest. Images are referenced by relative paths,
never embedded, so the page opens from disk without a server and rebuilds in
seconds. The only script is a short inline one that sorts a table when its
header is clicked.
"""

from __future__ import annotations

import html
import logging
import math
import os
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from study import provenance
from study.layout import Layout, completion_source
from study.split import final_iteration_file

log = logging.getLogger(__name__)

REPORT_DIR = "report"
THUMBNAIL = 64

# Clicking a header with data-sort sorts its table's body rows by the cells'
# data-value: numbers ascending, then descending on the next click, with
# empty cells last; data-sort="text" compares the values as text.
SORT_SCRIPT = """
document.querySelectorAll("th[data-sort]").forEach(function (header) {
  header.addEventListener("click", function () {
    var table = header.closest("table");
    var body = table.tBodies[0];
    var column = header.cellIndex;
    var ascending = header.getAttribute("aria-sort") !== "ascending";
    var asText = header.dataset.sort === "text";
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[column].dataset.value, y = b.cells[column].dataset.value;
      if (asText) { return ascending ? x.localeCompare(y) : y.localeCompare(x); }
      x = parseFloat(x); y = parseFloat(y);
      if (isNaN(x)) { return isNaN(y) ? 0 : 1; }
      if (isNaN(y)) { return -1; }
      return ascending ? x - y : y - x;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    table.querySelectorAll("th").forEach(function (other) { other.removeAttribute("aria-sort"); });
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  });
});
"""

STYLE = """
body { font-family: sans-serif; margin: 1.5em; }
table { border-collapse: collapse; margin-bottom: 2em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 2px 4px; text-align: right; vertical-align: middle; }
th[data-sort] { cursor: pointer; background: #eee; }
th[aria-sort="ascending"]::after { content: " \\25B2"; }
th[aria-sort="descending"]::after { content: " \\25BC"; }
td.image { padding: 0; }
td.image img { display: block; width: 64px; height: 64px; object-fit: cover; }
img.figure { max-width: 100%; }
.missing { color: #999; }
"""


def _link(target: Path, report_dir: Path) -> str:
    """Return the URL of ``target`` relative to the report folder."""
    return quote(os.path.relpath(target, report_dir).replace(os.sep, "/"))


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def _format(value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return f"{value:.4g}"
    return str(value)


def _value_cell(value) -> str:
    sort_value = repr(float(value)) if _is_number(value) else ""
    text = html.escape(_format(value))
    return f'<td data-value="{sort_value}">{text}</td>'


def _image_cell(path: Path | None, report_dir: Path, title: str, link: Path | None = None) -> str:
    if path is None or not path.is_file():
        return '<td class="image missing" data-value="">-</td>'
    image = (f'<img src="{_link(path, report_dir)}" loading="lazy" width="{THUMBNAIL}" '
             f'height="{THUMBNAIL}" alt="{html.escape(title)}" title="{html.escape(title)}">')
    if link is not None and link.is_file():
        image = f'<a href="{_link(link, report_dir)}">{image}</a>'
    return f'<td class="image" data-value="">{image}</td>'


def frame_table(frame: pd.DataFrame, table_id: str) -> str:
    """Return ``frame`` as a sortable HTML table: numeric columns sort by number, the rest as text."""
    if frame.empty:
        return f'<p id="{table_id}" class="missing">No rows.</p>'
    headers = []
    for column in frame.columns:
        numeric = pd.api.types.is_numeric_dtype(frame[column])
        kind = "number" if numeric else "text"
        headers.append(f'<th data-sort="{kind}">{html.escape(str(column))}</th>')
    lines = [f'<table id="{table_id}">', "<thead><tr>" + "".join(headers) + "</tr></thead>", "<tbody>"]
    for row in frame.itertuples(index=False):
        cells = []
        for value in row:
            if isinstance(value, str) or value is None:
                text = "" if value is None else value
                cells.append(f'<td data-value="{html.escape(text)}">{html.escape(text)}</td>')
            else:
                cells.append(_value_cell(float(value) if _is_number(value) else value))
        lines.append("<tr>" + "".join(cells) + "</tr>")
    lines.append("</tbody></table>")
    return "\n".join(lines)


def _read_csv(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.is_file() else None


def _test_images(layout: Layout, underfit: dict[str, pd.DataFrame], distances: pd.DataFrame | None
                 ) -> list[tuple[int, str]]:
    """Return ``(idx, file name)`` of every test image: the split's list, else the indices found."""
    test_list = layout.split_dir / "test.txt"
    if test_list.is_file():
        return list(enumerate(test_list.read_text().split()))
    indices = set()
    for table in underfit.values():
        indices.update(int(idx) for idx in table.index)
    if distances is not None:
        indices.update(int(idx) for idx in distances["idx"])
    return [(idx, "") for idx in sorted(indices)]


def _data_dir(layout: Layout) -> Path | None:
    manifest = layout.split_dir / "manifest.json"
    if not manifest.is_file():
        return None
    return Path(provenance.read_json(manifest)["data_dir"])


def _completion_images(folder: Path) -> dict[str, Path | None]:
    """Return the original, masked, final blended and final G(z) files of one completed image."""
    blended = final_iteration_file(folder / "gen_images")
    gz = None
    if blended is not None:
        gz = folder / "gz" / f"gz_{blended.stem.split('_')[1]}.jpg"
    return {"original": folder / "original.jpg", "masked": folder / "masked.jpg",
            "blended": blended, "gz": gz}


def _first_file(candidates: list[Path | None]) -> Path | None:
    return next((path for path in candidates if path is not None and path.is_file()), None)


def image_rows(layout: Layout, report_dir: Path, gans: list[str], baselines: list[str],
               labels: dict[str, str], clipping: str, mask: str) -> str:
    """Return the per-image table: the test face, then each GAN's and baseline's results."""
    underfit = {}
    for model in gans + baselines:
        table = _read_csv(layout.underfit(model) / "underfit.csv")
        if table is not None:
            underfit[model] = table.set_index("idx")
    distances = _read_csv(layout.gan_distances)
    distance_of = distances.set_index("idx") if distances is not None else None
    data_dir = _data_dir(layout)
    tests = _test_images(layout, underfit, distances)

    headers = ['<th data-sort="number">idx</th>', '<th data-sort="text">test file</th>',
               "<th>original</th>", "<th>masked</th>"]
    for model in gans:
        label = html.escape(labels.get(model, model))
        headers += [f'<th data-sort="number">{label} distance</th>',
                    f'<th data-sort="number">{label} gap</th>',
                    f"<th>{label} blended</th>", f"<th>{label} G(z)</th>",
                    f"<th>{label} nearest train</th>"]
    for model in baselines:
        label = html.escape(labels.get(model, model))
        headers += [f'<th data-sort="number">{label} gap</th>', f"<th>{label} image</th>"]

    lines = ['<table id="images">', "<thead><tr>" + "".join(headers) + "</tr></thead>", "<tbody>"]
    completions = {model: layout.completions(model, clipping, mask) for model in gans}
    for idx, name in tests:
        files = {model: _completion_images(folder / str(idx)) for model, folder in completions.items()}
        baseline_dir = layout.root / "baselines"
        original = _first_file([f["original"] for f in files.values()] + [baseline_dir / "original" / f"{idx}.png"])
        masked = _first_file([f["masked"] for f in files.values()] + [baseline_dir / "masked" / f"{idx}.png"])
        cells = [_value_cell(idx),
                 f'<td data-value="{html.escape(name)}">{html.escape(name)}</td>',
                 _image_cell(original, report_dir, f"test image {idx}"),
                 _image_cell(masked, report_dir, f"masked test image {idx}")]
        for model in gans:
            row = underfit.get(model)
            row = row.loc[idx] if row is not None and idx in row.index else None
            distance = float("nan")
            if distance_of is not None and model in distance_of.columns and idx in distance_of.index:
                distance = float(distance_of.loc[idx, model])
            gap = float(row["gap"]) if row is not None else float("nan")
            mosaic = None
            nearest = None
            if row is not None:
                mosaic = layout.underfit(model) / str(row.get("bucket", "")) / f"{idx}.jpg"
                train_file = row.get("train_file_1")
                if data_dir is not None and isinstance(train_file, str) and train_file:
                    nearest = data_dir / train_file
            cells += [_value_cell(distance), _value_cell(gap),
                      _image_cell(files[model]["blended"], report_dir, f"{model} blended", mosaic),
                      _image_cell(files[model]["gz"], report_dir, f"{model} G(z)", mosaic),
                      _image_cell(nearest, report_dir,
                                  f"nearest training image of {model}'s G(z): "
                                  f"{row.get('train_file_1') if row is not None else ''}", mosaic)]
        for model in baselines:
            row = underfit.get(model)
            row = row.loc[idx] if row is not None and idx in row.index else None
            gap = float(row["gap"]) if row is not None else float("nan")
            image = baseline_dir / model.removeprefix("baseline_") / f"{idx}.png"
            cells += [_value_cell(gap), _image_cell(image, report_dir, f"{model} image")]
        lines.append("<tr>" + "".join(cells) + "</tr>")
    lines.append("</tbody></table>")
    return "\n".join(lines)


def build_report(root: str | Path, clipping: str | None = None, mask: str | None = None) -> Path:
    """Write ``<root>/report/index.html`` from the analysis results and the images on disk.

    Raises FileNotFoundError when ``results/summary.csv`` is missing, because
    the report shows the analysis that analyze.py writes.
    """
    layout = Layout(root)
    clipping, mask = completion_source(layout, clipping, mask)
    report_dir = layout.root / REPORT_DIR
    summary = _read_csv(layout.results / "summary.csv")
    if summary is None:
        raise FileNotFoundError(f"analysis results not found: {layout.results / 'summary.csv'}. "
                                f"Make them with: python analyze.py --root {root}")
    kinds = dict(zip(summary["model"], summary.get("kind", pd.Series(["gan"] * len(summary)))))
    labels = dict(zip(summary["model"], summary["label"]))
    gans = [model for model in summary["model"] if kinds.get(model) != "baseline"]
    baselines = [model for model in summary["model"] if kinds.get(model) == "baseline"]

    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>Inpainting study report: {html.escape(str(layout.root))}</title>",
             f"<style>{STYLE}</style></head><body>",
             f"<h1>Inpainting study report</h1><p>Experiment folder: {html.escape(str(layout.root.resolve()))}. "
             f"Completions: clipping {html.escape(clipping)}, mask {html.escape(mask)}. "
             "Click a column header to sort by it.</p>"]

    parts.append("<h2>Figures</h2>")
    for name, caption in (("sim_distances.png", "Per-image cosine distance"),
                          ("joint_bar.png", "Mean distance and mean gap")):
        figure = layout.figures / name
        if figure.is_file():
            parts.append(f'<figure><img class="figure" src="{_link(figure, report_dir)}" '
                         f'alt="{caption}"><figcaption>{caption}</figcaption></figure>')
        else:
            parts.append(f'<p class="missing">{name} not found; run analyze.py.</p>')

    parts.append("<h2>Summary per model</h2>")
    parts.append(frame_table(summary, "summary"))
    for title, file_name, table_id in (("Friedman tests", "friedman.csv", "friedman"),
                                       ("Pairwise Wilcoxon signed-rank tests (Holm-corrected)",
                                        "pairwise.csv", "pairwise"),
                                       ("Seed-to-seed spread", "seeds.csv", "seeds")):
        table = _read_csv(layout.results / file_name)
        if table is not None:
            parts.append(f"<h2>{title}</h2>")
            parts.append(frame_table(table, table_id))

    parts.append("<h2>Test images</h2><p>Gap: d(G(z), test) - d(G(z), nearest train); above 0 the "
                 "inpainting is closer to a training face. Thumbnails of a GAN link to its "
                 "underfit mosaic. The nearest training image is the file itself, uncropped.</p>")
    parts.append(image_rows(layout, report_dir, gans, baselines, labels, clipping, mask))
    parts.append(f"<script>{SORT_SCRIPT}</script></body></html>")

    path = provenance.write_text_atomic(report_dir / "index.html", "\n".join(parts) + "\n")
    log.info("report written to %s", path)
    return path
