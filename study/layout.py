"""Folder layout of one experiment under an output root.

Stages hand data to each other through these folders, so the scripts agree
on paths by calling these functions instead of rebuilding strings.
"""

from __future__ import annotations

from pathlib import Path

TEST_DATASET = "test"


class Layout:
    """Paths of every stage's outputs under ``root``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def split_dir(self) -> Path:
        return self.root / "split"

    @property
    def test_images(self) -> Path:
        return self.split_dir / TEST_DATASET

    @property
    def tfrecords(self) -> Path:
        return self.root / "tfrecords"

    def checkpoints(self, model: str) -> Path:
        return self.root / "checkpoints" / model

    def completions(self, model: str, clipping: str = "stochastic", mask: str = "center",
                    dataset: str = TEST_DATASET) -> Path:
        return self.root / f"completions_{clipping}_{mask}" / model / dataset

    @property
    def imagesdb(self) -> Path:
        return self.root / "imagesdb"

    @property
    def embeddings(self) -> Path:
        return self.root / "embeddings"

    @property
    def gan_distances(self) -> Path:
        return self.root / "gan_distances.csv"

    def underfit(self, model: str) -> Path:
        return self.root / "underfit" / model

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def results(self) -> Path:
        return self.root / "results"


def completion_source(layout: Layout, clipping: str | None = None,
                      mask: str | None = None) -> tuple[str, str]:
    """Return the ``(clipping, mask)`` of the completions an experiment's results describe.

    The image database (``imagesdb/database.json``) records which
    ``completions_<clipping>_<mask>`` folder the cosine distances were
    computed from. A ``clipping`` or ``mask`` that names another folder is an
    error, because the figures and the report would carry the wrong label.
    Without a database the defaults are stochastic clipping and the center
    mask; a folder named explicitly must exist.
    """
    from study.provenance import read_json

    record = layout.imagesdb / "database.json"
    if record.exists():
        source = Path(read_json(record).get("completions", "")).name.split("_", 2)
        if len(source) == 3 and source[0] == "completions":
            recorded = (source[1], source[2])
            requested = (clipping or recorded[0], mask or recorded[1])
            if requested != recorded:
                raise ValueError(
                    f"the cosine distances in {layout.gan_distances} come from "
                    f"completions_{recorded[0]}_{recorded[1]} (see {record}), not "
                    f"completions_{requested[0]}_{requested[1]}. Drop --clipping/--maskType, or "
                    f"rebuild the database and distances for those completions: "
                    f"split_train_test.py --db --clipping {requested[0]} --maskType {requested[1]} "
                    "--overwrite, then facenet/gans_compare.py --overwrite")
            return recorded
    chosen = (clipping or "stochastic", mask or "center")
    folder = layout.root / f"completions_{chosen[0]}_{chosen[1]}"
    if (clipping or mask) and not folder.is_dir():
        present = sorted(p.name for p in layout.root.glob("completions_*") if p.is_dir())
        raise FileNotFoundError(
            f"no completions folder {folder}; this experiment has "
            f"{', '.join(present) if present else 'none'}. Check --clipping and --maskType.")
    return chosen
