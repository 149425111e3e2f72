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
