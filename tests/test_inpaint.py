"""Inpainting: masks, clipping, blending, z recovery and the complete.py stage."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import REPO, synthetic_rgb
from models import checkpoint, get_spec
from models.gan import GAN, Sizes
from study.blend import overlay, poisson_blend
from study.inpaint import (InpaintSettings, LatentOptimizer, checkpoint_iterations, clip_latent,
                           initial_latents, optimize_batch)
from study.masks import importance_weights, make_mask, mask_names

TINY = Sizes(z_dim=8, gf_dim=2, df_dim=2, image_size=16)


def test_center_mask_hides_central_quarter():
    mask = make_mask("center", 64)
    assert mask.shape == (64, 64)
    assert mask.sum() == 64 * 64 - 32 * 32
    assert (mask[16:48, 16:48] == 0).all()
    assert mask[15, 15] == 1 and mask[48, 48] == 1


def test_stochastic_clipping_redraws_only_out_of_range():
    z = tf.constant([[-3.0, -1.0, 0.2, 1.0, 1.5, 0.999]])
    clipped = clip_latent(z, "stochastic", tf.constant([0, 1])).numpy()
    assert clipped[0, 1:4].tolist() == pytest.approx([-1.0, 0.2, 1.0])
    assert clipped[0, 5] == pytest.approx(0.999)
    assert (np.abs(clipped) <= 1.0).all()
    assert clipped[0, 0] != -1.0 and clipped[0, 4] != 1.0  # redrawn, not clipped


def test_standard_clipping_clips():
    z = tf.constant([[-3.0, 0.5, 2.0]])
    assert clip_latent(z, "standard", tf.constant([0, 1])).numpy().tolist() == [[-1.0, 0.5, 1.0]]


def test_checkpoint_iterations_always_include_final():
    assert checkpoint_iterations(1500, 100)[-1] == 1500
    assert checkpoint_iterations(250, 100) == [100, 200, 250]
    assert checkpoint_iterations(30, 0) == [30]
    with pytest.raises(ValueError):
        checkpoint_iterations(0, 100)


def test_initial_latents_depend_only_on_index():
    together = initial_latents([3, 4, 5], 6, seed=1)
    alone = initial_latents([4], 6, seed=1)
    assert np.array_equal(together[1], alone[0])
    assert together.min() >= -1 and together.max() <= 1


def test_weighted_context_matches_hand_computation():
    mask = np.ones((9, 9), np.float32)
    mask[4, 4] = 0.0  # one hidden pixel in the middle
    weights = importance_weights(mask, window=7)
    # A known pixel within 3 rows and columns sees exactly one hidden pixel: 1/49.
    assert weights[1, 1] == pytest.approx(1 / 49)
    assert weights[4, 7] == pytest.approx(1 / 49)
    assert weights[0, 0] == 0.0  # 4 away from the hole in both directions
    assert weights[4, 4] == 0.0  # hidden pixels weigh nothing
    slow = np.zeros((12, 12), np.float32)
    rng = np.random.default_rng(0)
    random_mask = (rng.random((12, 12)) > 0.3).astype(np.float32)
    fast = importance_weights(random_mask)
    for y in range(12):
        for x in range(12):
            window = 1 - random_mask[max(0, y - 3):y + 4, max(0, x - 3):x + 4]
            slow[y, x] = random_mask[y, x] * window.sum() / 49
    assert np.allclose(fast, slow, atol=1e-6)


@pytest.mark.parametrize("name", mask_names())
def test_blending_never_crashes_and_keeps_mask(name):
    original = synthetic_rgb(1, 64, 64)
    generated = synthetic_rgb(2, 64, 64)
    mask = make_mask(name, 64, seed=3)
    copy = mask.copy()
    blended, method = poisson_blend(original, generated, mask)
    assert blended.shape == (64, 64, 3) and blended.dtype == np.uint8
    assert np.array_equal(mask, copy)
    assert method in ("poisson", "overlay")


def test_blending_edge_masks():
    original = synthetic_rgb(5, 64, 64)
    generated = synthetic_rgb(6, 64, 64)
    # OpenCV cannot clone a region one pixel high; the plain overlay is used and recorded.
    top_row = np.ones((64, 64), np.float32)
    top_row[0, :] = 0
    blended, method = poisson_blend(original, generated, top_row)
    assert method == "overlay"
    assert np.array_equal(blended, overlay(original, generated, top_row))
    top_band = np.ones((64, 64), np.float32)
    top_band[:3, :] = 0
    blended, method = poisson_blend(original, generated, top_band)
    assert method == "poisson"
    assert np.array_equal(blended[3:], original[3:])
    everything = np.zeros((64, 64), np.float32)
    blended, method = poisson_blend(original, generated, everything)
    assert method == "poisson" and blended.shape == (64, 64, 3)
    nothing = np.ones((64, 64), np.float32)
    blended, method = poisson_blend(original, generated, nothing)
    assert method == "overlay" and np.array_equal(blended, original)


def test_blending_identity_when_patch_matches():
    original = synthetic_rgb(7, 64, 64)
    blended, _ = poisson_blend(original, original.copy(), make_mask("center"))
    assert np.abs(blended.astype(int) - original).max() <= 1


def test_overlay_takes_hole_from_generated():
    original = np.zeros((4, 4, 3), np.uint8)
    generated = np.full((4, 4, 3), 200, np.uint8)
    mask = np.ones((4, 4), np.float32)
    mask[1, 2] = 0
    out = overlay(original, generated, mask)
    assert out[1, 2].tolist() == [200, 200, 200] and out.sum() == 600


def test_latent_recovery_of_known_generator():
    gan = GAN(get_spec("dcgan"), TINY, seed=5)
    z_star = np.random.default_rng(1).uniform(-0.8, 0.8, (2, TINY.z_dim)).astype(np.float32)
    target = gan.sample(z_star)
    mask = make_mask("full", 16)
    settings = InpaintSettings(lam=0.0, learning_rate=0.05, clipping="standard", restarts=3, seed=2)
    optimizer = LatentOptimizer(gan, mask, settings)
    start_loss = optimizer.evaluate(initial_latents([0, 1], TINY.z_dim, 2), target)[1]
    z, restart_losses, _ = optimize_batch(optimizer, target, [0, 1], iterations=400, save_every=0)
    _, contextual, _ = optimizer.evaluate(z, target)
    assert restart_losses.shape == (2, 3)
    assert (contextual < 0.05 * start_loss).all(), (contextual, start_loss)
    assert np.allclose(contextual, restart_losses.min(axis=1), rtol=1e-4)


def test_loss_per_image_independent_of_batch():
    gan = GAN(get_spec("wgan-gp"), TINY, seed=1)
    images = np.random.default_rng(2).uniform(-1, 1, (3, 16, 16, 3)).astype(np.float32)
    optimizer = LatentOptimizer(gan, make_mask("center", 16), InpaintSettings(lam=0.5))
    z = initial_latents([0, 1, 2], TINY.z_dim, 0)
    batch_total, _, _ = optimizer.evaluate(z, images)
    single_total, _, _ = optimizer.evaluate(z[1:2], images[1:2])
    assert batch_total[1] == pytest.approx(single_total[0], rel=1e-5)


# ----- complete.py as a stage ---------------------------------------------------------------


def _tiny_experiment(tmp_path, n_test=3):
    root = tmp_path / "exp"
    test_dir = root / "split" / "test"
    test_dir.mkdir(parents=True)
    names = [f"{i:06d}.jpg" for i in range(n_test)]
    for i, name in enumerate(names):
        Image.fromarray(synthetic_rgb(i, 40, 40)).save(test_dir / name)
    (root / "split" / "test.txt").write_text("\n".join(names) + "\n")
    (root / "tfrecords").mkdir()
    (root / "tfrecords" / "manifest.json").write_text(json.dumps(
        {"preprocessing": {"size": 16, "crop_fraction": 1.0}, "n_images": 0, "shards": []}))
    return root


def _run_complete(root, *extra):
    return subprocess.run([sys.executable, str(REPO / "complete.py"), "--model", "dcgan", "--root", str(root),
                           "--iterations", "4", "--save_every", "2", "--batch_size", "64", "--no-progress",
                           *extra], capture_output=True, text=True, timeout=300)


def test_complete_before_training_names_folder_and_command(tmp_path):
    root = _tiny_experiment(tmp_path)
    result = _run_complete(root)
    assert result.returncode == 2
    assert str(root / "checkpoints" / "dcgan") in result.stderr
    assert "train.py --model dcgan" in result.stderr


def test_complete_three_images_batch_64_and_rerun(tmp_path):
    root = _tiny_experiment(tmp_path)
    checkpoint.save(GAN(get_spec("dcgan"), TINY, seed=0), root / "checkpoints" / "dcgan", 7)
    result = _run_complete(root)
    assert result.returncode == 0, result.stderr
    out = root / "completions_stochastic_center" / "dcgan" / "test"
    folders = sorted(p.name for p in out.iterdir() if p.is_dir() and p.name.isdigit())
    assert folders == ["0", "1", "2"]
    for idx in folders:
        assert sorted(p.name for p in (out / idx / "gen_images").iterdir()) == ["gen_2.jpg", "gen_4.jpg"]
        assert (out / idx / "gz" / "gz_4.jpg").exists()
        assert (out / idx / "gen_images_overlay" / "gen_4.jpg").exists()
        with np.load(out / idx / "z.npz", allow_pickle=False) as saved:
            assert saved["z"].shape == (8,)
            assert int(saved["iterations"]) == 4
    stamp = (out / "0" / "gen_images" / "gen_4.jpg").stat().st_mtime_ns
    again = _run_complete(root)
    assert again.returncode == 0
    assert "completed 0 image(s)" in again.stdout
    assert (out / "0" / "gen_images" / "gen_4.jpg").stat().st_mtime_ns == stamp
    changed = _run_complete(root, "--lam", "0.1")
    assert changed.returncode == 2 and "--overwrite" in changed.stderr


def test_complete_other_model_checkpoint_is_clear_error(tmp_path):
    root = _tiny_experiment(tmp_path)
    checkpoint.save(GAN(get_spec("wgan-gp"), TINY, seed=0), root / "checkpoints" / "dcgan", 1)
    result = _run_complete(root)
    assert result.returncode == 2
    assert "wgan-gp" in result.stderr and "dcgan" in result.stderr
