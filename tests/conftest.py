"""Shared fixtures: synthetic face-like images and the real CelebA sample."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CELEBA_SAMPLE = Path(os.environ.get("CELEBA_SAMPLE", REPO.parent / "shared" / "celeba_sample"))


@pytest.fixture
def celeba_dir() -> Path:
    """The real CelebA sample; tests that need it are skipped where it is absent."""
    if not CELEBA_SAMPLE.is_dir() or not any(CELEBA_SAMPLE.iterdir()):
        pytest.skip(f"real CelebA sample not found at {CELEBA_SAMPLE} (set CELEBA_SAMPLE to its folder)")
    return CELEBA_SAMPLE


def synthetic_rgb(seed: int, height: int = 96, width: int = 80) -> np.ndarray:
    """A smooth random uint8 RGB image, so JPEG round trips stay close."""
    import cv2

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """Twelve synthetic JPEGs of varying size in a fresh folder."""
    from PIL import Image

    folder = tmp_path / "faces"
    folder.mkdir()
    for i in range(12):
        Image.fromarray(synthetic_rgb(i, 90 + i, 70 + 2 * i)).save(folder / f"{i:06d}.jpg", quality=95)
    return folder
