"""Fill quality over the hidden region: L1, PSNR, SSIM and fill_quality.csv."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from conftest import synthetic_rgb
from study import fill_quality
from study.fill_quality import (FIELDS, measure, rebuild_csv, region_l1, region_psnr, region_ssim,
                                ssim_map)
from study.masks import make_mask

HEADER = "idx,l1_blended,psnr_blended,ssim_blended,l1_overlay,psnr_overlay,ssim_overlay,blend_method"


def _noisy_pair(seed=0, size=64):
    original = synthetic_rgb(seed, size, size)
    noise = np.random.default_rng(seed).integers(-25, 26, original.shape)
    return original, np.clip(original.astype(int) + noise, 0, 255).astype(np.uint8)


def test_psnr_matches_skimage_on_full_region():
    original, noisy = _noisy_pair()
    everywhere = np.ones((64, 64), bool)
    expected = peak_signal_noise_ratio(original, noisy, data_range=255)
    assert region_psnr(noisy, original, everywhere) == pytest.approx(expected, rel=1e-12)


def test_ssim_matches_skimage_on_full_region():
    original, noisy = _noisy_pair(1)
    mean_ssim, full_map = structural_similarity(original, noisy, channel_axis=2, data_range=255,
                                                full=True)
    ours = ssim_map(original, noisy)
    assert np.allclose(ours, full_map.mean(axis=2), atol=1e-10)
    everywhere = np.ones((64, 64), bool)
    assert region_ssim(original, noisy, everywhere) == pytest.approx(full_map.mean(), abs=1e-10)
    # skimage's mean leaves out the 3 pixels at each border that the 7x7 window overhangs.
    interior = np.zeros((64, 64), bool)
    interior[3:-3, 3:-3] = True
    assert region_ssim(original, noisy, interior) == pytest.approx(mean_ssim, abs=1e-10)
    assert 0.2 < mean_ssim < 0.95  # the pair is neither identical nor unrelated


def test_region_metrics_count_only_hidden_pixels():
    original = np.full((32, 32, 3), 100, np.uint8)
    completion = original.copy()
    hidden = np.zeros((32, 32), bool)
    hidden[20:28, 20:28] = True
    completion[hidden] = 110  # every hidden value is off by 10
    completion[:4, :4] = 0  # a large error in known pixels, which must not count
    assert region_l1(completion, original, hidden) == pytest.approx(10.0)
    assert region_psnr(completion, original, hidden) == pytest.approx(10 * math.log10(255 ** 2 / 100))
    # A hidden block more than 3 pixels away from every difference has SSIM exactly 1.
    far = np.zeros((32, 32), bool)
    far[10:14, 10:14] = True
    assert region_ssim(completion, original, far) == pytest.approx(1.0)
    assert region_ssim(completion, original, np.ones((32, 32), bool)) < 1.0


def test_region_ssim_matches_skimage_map():
    original, noisy = _noisy_pair(2)
    hidden = make_mask("random", 64, seed=4) < 0.5
    _, full_map = structural_similarity(original, noisy, channel_axis=2, data_range=255, full=True)
    expected = full_map.mean(axis=2)[hidden].mean()
    assert region_ssim(original, noisy, hidden) == pytest.approx(expected, abs=1e-10)


def test_identical_region_psnr_is_inf():
    original = synthetic_rgb(3, 16, 16)
    hidden = np.ones((16, 16), bool)
    assert region_psnr(original, original, hidden) == math.inf
    assert region_l1(original, original, hidden) == 0.0
    assert region_ssim(original, original, hidden) == pytest.approx(1.0)


def test_measure_nan_when_nothing_hidden():
    original, noisy = _noisy_pair(4, 16)
    result = measure(original, noisy, noisy, make_mask("full", 16))
    assert set(result) == set(fill_quality.METRICS)
    assert all(math.isnan(value) for value in result.values())


def test_ssim_rejects_bad_shapes():
    with pytest.raises(ValueError, match="at least 7x7"):
        ssim_map(np.zeros((5, 5, 3)), np.zeros((5, 5, 3)))
    with pytest.raises(ValueError, match="one shape"):
        ssim_map(np.zeros((8, 8, 3)), np.zeros((8, 9, 3)))


def _save_z(folder, **arrays):
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "z.npz", z=np.zeros(4, np.float32), iterations=np.int64(5), **arrays)


def test_rebuild_csv_from_latent_files(tmp_path):
    stored = {metric: np.float64(index + 0.5) for index, metric in enumerate(fill_quality.METRICS)}
    _save_z(tmp_path / "10", blend_method=np.str_("poisson"), **stored)
    _save_z(tmp_path / "2", blend_method=np.str_("overlay"),
            **{metric: np.float64("nan") for metric in fill_quality.METRICS})
    (tmp_path / "3").mkdir()  # started but never finished: no z.npz, no row
    path = rebuild_csv(tmp_path, make_mask("center", 16))
    lines = path.read_text().splitlines()
    assert lines[0] == HEADER
    assert lines[1] == "2,nan,nan,nan,nan,nan,nan,overlay"
    assert lines[2] == "10,0.5,1.5,2.5,3.5,4.5,5.5,poisson"
    assert len(lines) == 3
    table = pd.read_csv(path)
    assert tuple(table.columns) == FIELDS
    assert table["psnr_blended"].dtype == float
    assert table["psnr_blended"].isna().tolist() == [True, False]


def test_rebuild_csv_measures_files_of_older_runs(tmp_path):
    size = 16
    known = make_mask("center", size)
    original, noisy = _noisy_pair(5, size)
    folder = tmp_path / "0"
    for name, image in (("original.jpg", original), ("gen_images/gen_5.jpg", noisy),
                        ("gen_images_overlay/gen_5.jpg", noisy)):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / name, quality=95)
    _save_z(folder)  # written before z.npz stored the metrics and the blending method
    table = pd.read_csv(rebuild_csv(tmp_path, known))
    assert table["blend_method"].tolist() == ["unknown"]
    assert table["l1_blended"].iloc[0] > 0
    assert table["l1_blended"].iloc[0] == pytest.approx(table["l1_overlay"].iloc[0])
    assert -1 <= table["ssim_blended"].iloc[0] <= 1
