"""The static HTML report: links that resolve, one row per test image, the inline sort script."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
import pytest

from study import analysis
from study.analysis import run_analysis
from study.images import save_rgb
from study.report import build_report

TEST = ["000010.jpg", "000011.jpg", "000012.jpg"]
MODELS = ("dcgan", "wgan-gp")
TRAIN = ["000001.jpg", "000002.jpg"]


class ReportParser(HTMLParser):
    """Collect links, the rows of the per-image table, its sortable headers and the scripts."""

    def __init__(self):
        super().__init__()
        self.links: list[str] = []
        self.table_stack: list[str] = []
        self.in_body = False
        self.image_rows = 0
        self.image_headers: list[tuple[str, str | None]] = []
        self.in_header = False
        self.header_text = ""
        self.header_sort = None
        self.scripts: list[str] = []
        self.in_script = False
        self.script_sources: list[str] = []
        self.stylesheets: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("img", "a") and (attrs.get("src") or attrs.get("href")):
            self.links.append(attrs.get("src") or attrs.get("href"))
        if tag == "table":
            self.table_stack.append(attrs.get("id", ""))
        inside_images = bool(self.table_stack) and self.table_stack[-1] == "images"
        if tag == "tbody" and inside_images:
            self.in_body = True
        if tag == "tr" and self.in_body:
            self.image_rows += 1
        if tag == "th" and inside_images:
            self.in_header, self.header_text, self.header_sort = True, "", attrs.get("data-sort")
        if tag == "script":
            self.in_script = True
            if "src" in attrs:
                self.script_sources.append(attrs["src"])
        if tag == "link":
            self.stylesheets.append(attrs.get("href", ""))

    def handle_endtag(self, tag):
        if tag == "table" and self.table_stack:
            self.table_stack.pop()
        if tag == "tbody":
            self.in_body = False
        if tag == "th" and self.in_header:
            self.image_headers.append((self.header_text, self.header_sort))
            self.in_header = False
        if tag == "script":
            self.in_script = False

    def handle_data(self, data):
        if self.in_header:
            self.header_text += data
        if self.in_script:
            self.scripts.append(data)


def flat(colour) -> np.ndarray:
    return np.full((64, 64, 3), colour, dtype=np.uint8)


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    """A finished experiment: split, completions, distances, underfit results and one baseline."""
    monkeypatch.setattr(analysis, "FIGURE_DPI", 60)
    root, data = tmp_path / "root", tmp_path / "data"
    for i, name in enumerate(TRAIN):
        save_rgb(data / name, flat((40 * i, 90, 90)))
    (root / "split").mkdir(parents=True)
    (root / "split" / "test.txt").write_text("\n".join(TEST) + "\n")
    (root / "split" / "manifest.json").write_text(json.dumps({"data_dir": str(data)}))

    rng = np.random.default_rng(0)
    distances = {"idx": range(len(TEST))}
    for model in MODELS:
        for idx in range(len(TEST)):
            folder = root / "completions_stochastic_center" / model / "test" / str(idx)
            save_rgb(folder / "original.jpg", flat((200, 20 * idx, 0)))
            save_rgb(folder / "masked.jpg", flat((255, 255, 255)))
            save_rgb(folder / "gen_images" / "gen_100.jpg", flat((0, 40, 30 * idx)))
            save_rgb(folder / "gz" / "gz_100.jpg", flat((30 * idx, 40, 40)))
        gaps = rng.normal(0.0, 0.1, len(TEST))
        buckets = np.where(gaps <= 0, "generalized", "recall")
        out = root / "underfit" / model
        out.mkdir(parents=True)
        pd.DataFrame({"idx": range(len(TEST)), "test_file": TEST, "d_test": rng.uniform(0, 0.2, 3),
                      "train_file_1": [TRAIN[idx % 2] for idx in range(len(TEST))], "gap": gaps,
                      "bucket": buckets}).to_csv(out / "underfit.csv", index=False)
        for idx, bucket in enumerate(buckets):
            save_rgb(out / bucket / f"{idx}.jpg", flat((1, 2, 3)))
        distances[model] = rng.uniform(0.0, 0.3, len(TEST))
    pd.DataFrame(distances).to_csv(root / "gan_distances.csv", index=False)

    out = root / "underfit" / "baseline_test"
    out.mkdir(parents=True)
    pd.DataFrame({"idx": range(len(TEST)), "test_file": TEST, "d_test": 0.0,
                  "train_file_1": TRAIN[0], "gap": [-0.1, -0.2, -0.3],
                  "bucket": "generalized"}).to_csv(out / "underfit.csv", index=False)
    for idx in range(len(TEST)):
        save_rgb(root / "baselines" / "test" / f"{idx}.png", flat((200, 20 * idx, 0)))
    return root


def parse(path: Path) -> ReportParser:
    parser = ReportParser()
    parser.feed(path.read_text())
    return parser


def test_report_links_resolve(root):
    report = run_analysis(root, n_resamples=100).report_path
    parser = parse(report)

    assert report == root / "report" / "index.html"
    assert parser.links
    for link in parser.links:
        assert not urlparse(link).scheme, link        # relative, no http:// or data:
        assert (report.parent / unquote(link)).resolve().is_file(), link


def test_report_one_row_per_test_image(root):
    parser = parse(run_analysis(root, n_resamples=100).report_path)

    assert parser.image_rows == len(TEST)


def test_report_shows_every_image_kind(root):
    parser = parse(run_analysis(root, n_resamples=100).report_path)
    targets = [unquote(link) for link in parser.links]

    for name in ("original.jpg", "masked.jpg", "gen_100.jpg", "gz_100.jpg"):
        assert any(target.endswith(name) for target in targets), name
    assert any(target.endswith("data/000001.jpg") for target in targets)     # nearest training image
    assert any("baselines/test/0.png" in target for target in targets)
    assert any("underfit/dcgan/" in target for target in targets)             # mosaic links
    assert any(target.endswith("figures/joint_bar.png") for target in targets)
    assert any(target.endswith("figures/sim_distances.png") for target in targets)


def test_report_sortable_by_gap_inline_only(root):
    parser = parse(run_analysis(root, n_resamples=100).report_path)
    script = "".join(parser.scripts)

    gap_headers = [text for text, sort in parser.image_headers if text.endswith(" gap") and sort == "number"]
    assert len(gap_headers) == len(MODELS) + 1
    assert "addEventListener" in script
    assert ".sort(" in script
    assert parser.script_sources == []
    assert parser.stylesheets == []


def test_report_rebuilds_from_files_alone(root):
    run_analysis(root, n_resamples=100)
    results = sorted((root / "results").glob("*.csv"))
    before = {path: path.stat().st_mtime_ns for path in results}
    (root / "report" / "index.html").unlink()

    report = build_report(root)

    assert report.is_file()
    assert {path: path.stat().st_mtime_ns for path in results} == before
    assert parse(report).image_rows == len(TEST)


def test_report_without_results_names_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="analyze.py"):
        build_report(tmp_path)
