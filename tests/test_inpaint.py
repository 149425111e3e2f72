"""Inpainting: masks, clipping, blending, z recovery and the complete.py stage."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import complete
from conftest import REPO, synthetic_rgb
from models import checkpoint, get_spec
from models.gan import GAN, Sizes
from study.blend import overlay, poisson_blend
from study.cli import run_main
from study.fill_quality import measure
from study.images import decode_rgb, to_uint8, to_unit_range
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
    quality = measure(original, blended, overlay(original, generated, mask), mask)
    if name == "full":
        assert all(np.isnan(value) for value in quality.values())
    else:
        assert all(np.isfinite(value) for value in quality.values()), quality


def test_blending_edge_masks():
    original = synthetic_rgb(5, 64, 64)
    generated = synthetic_rgb(6, 64, 64)
    top_row = np.ones((64, 64), np.float32)
    top_row[0, :] = 0
    blended, method = poisson_blend(original, generated, top_row)
    assert method == "poisson"
    assert np.array_equal(blended[1:], original[1:])
    top_band = np.ones((64, 64), np.float32)
    top_band[:3, :] = 0
    blended, method = poisson_blend(original, generated, top_band)
    assert method == "poisson"
    assert np.array_equal(blended[3:], original[3:])
    # Nothing known anchors the fill, so G(z) itself is the completion.
    everything = np.zeros((64, 64), np.float32)
    blended, method = poisson_blend(original, generated, everything)
    assert method == "overlay"
    assert np.array_equal(blended, generated)
    nothing = np.ones((64, 64), np.float32)
    blended, method = poisson_blend(original, generated, nothing)
    assert method == "overlay"
    assert np.array_equal(blended, original)


@pytest.mark.parametrize("name", mask_names())
def test_blending_never_reads_hidden_original(name):
    original = synthetic_rgb(8, 64, 64)
    generated = synthetic_rgb(9, 64, 64)
    mask = make_mask(name, 64, seed=3)
    erased = original.copy()
    erased[mask < 0.5] = 0
    blended, _ = poisson_blend(original, generated, mask)
    assert np.array_equal(blended, poisson_blend(erased, generated, mask)[0])
    assert np.array_equal(blended[mask > 0.5], original[mask > 0.5])


def test_blending_identity_when_patch_matches():
    original = synthetic_rgb(7, 64, 64)
    blended, _ = poisson_blend(original, original.copy(), make_mask("center"))
    assert np.abs(blended.astype(int) - original).max() <= 1


def test_blending_removes_constant_offset():
    # Poisson blending keeps only the patch's gradients, so a brighter copy
    # of the truth blends back to the truth.
    original = (synthetic_rgb(10, 64, 64) // 2 + 40).astype(np.uint8)
    brighter = original + 30
    for name in ("center", "left", "random"):
        blended, method = poisson_blend(original, brighter, make_mask(name, 64, seed=1))
        assert method == "poisson"
        assert np.abs(blended.astype(int) - original).max() <= 1, name


def test_overlay_takes_hole_from_generated():
    original = np.zeros((4, 4, 3), np.uint8)
    generated = np.full((4, 4, 3), 200, np.uint8)
    mask = np.ones((4, 4), np.float32)
    mask[1, 2] = 0
    out = overlay(original, generated, mask)
    assert out[1, 2].tolist() == [200, 200, 200] and out.sum() == 600


def _responsive_generator(seed=5, gain=2.0):
    """A tiny DCGAN whose G(z) changes visibly with z.

    With the usual N(0, 0.02) initialization the tiny generator's output
    moves by less than one uint8 step across all z, so z could not be
    recovered from an image. Kernels drawn with std gain / sqrt(fan-in) fix that.
    """
    gan = GAN(get_spec("dcgan"), TINY, seed=seed)
    rng = np.random.default_rng(seed)
    for variable in gan.generator.trainable_variables:
        if "kernel" in variable.path:
            shape = tuple(variable.shape)
            fan_in = shape[0] if len(shape) == 2 else shape[0] * shape[1] * shape[3]
            variable.assign(rng.normal(0.0, gain / np.sqrt(fan_in), shape).astype(np.float32))
    return gan


def test_latent_recovery_of_known_generator():
    gan = _responsive_generator()
    z_star = np.random.default_rng(1).uniform(-0.8, 0.8, (2, TINY.z_dim)).astype(np.float32)
    target = gan.sample(z_star)
    mask = make_mask("full", 16)
    settings = InpaintSettings(lam=0.0, learning_rate=0.05, clipping="standard", restarts=3, seed=2)
    optimizer = LatentOptimizer(gan, mask, settings)
    start_loss = optimizer.evaluate(initial_latents([0, 1], TINY.z_dim, 2), target)[1]
    z, restart_losses, _ = optimize_batch(optimizer, target, [0, 1], iterations=200, save_every=0)
    _, contextual, _ = optimizer.evaluate(z, target)
    assert restart_losses.shape == (2, 3)
    assert (start_loss > 10).all(), start_loss
    assert (contextual < 0.01 * start_loss).all(), (contextual, start_loss)
    assert np.abs(z - z_star).max() < 0.1
    assert np.allclose(contextual, restart_losses.min(axis=1), rtol=1e-4)


def test_loss_per_image_independent_of_batch():
    gan = GAN(get_spec("wgan-gp"), TINY, seed=1)
    images = np.random.default_rng(2).uniform(-1, 1, (3, 16, 16, 3)).astype(np.float32)
    optimizer = LatentOptimizer(gan, make_mask("center", 16), InpaintSettings(lam=0.5))
    z = initial_latents([0, 1, 2], TINY.z_dim, 0)
    batch_total, _, _ = optimizer.evaluate(z, images)
    single_total, _, _ = optimizer.evaluate(z[1:2], images[1:2])
    assert batch_total[1] == pytest.approx(single_total[0], rel=1e-5)


def test_objective_without_discriminator_when_lam_zero():
    gan = GAN(get_spec("dcgan"), TINY, seed=3)
    images = np.random.default_rng(4).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
    z = tf.constant(initial_latents([0, 1], TINY.z_dim, 0))
    optimizer = LatentOptimizer(gan, make_mask("full", 16), InpaintSettings(lam=0.0))
    total, contextual, _ = optimizer.evaluate(z, images)
    assert float(optimizer.objective(z, images)) == pytest.approx(float(total.sum()), rel=1e-5)
    assert np.allclose(total, contextual)


# ----- complete.py as a stage ---------------------------------------------------------------
# Most runs call complete.main in this process: a subprocess pays several
# seconds of TensorFlow start-up each time.

CSV_HEADER = ("idx,l1_blended,psnr_blended,ssim_blended,l1_overlay,psnr_overlay,ssim_overlay,"
              "blend_method")


def _tiny_experiment(tmp_path, n_test=3, size=16):
    root = tmp_path / "exp"
    test_dir = root / "split" / "test"
    test_dir.mkdir(parents=True)
    names = [f"{i:06d}.jpg" for i in range(n_test)]
    for i, name in enumerate(names):
        Image.fromarray(synthetic_rgb(i, 40, 40)).save(test_dir / name)
    _write_split(root, names, size)
    return root


def _write_split(root, names, size):
    (root / "split" / "test.txt").write_text("\n".join(names) + "\n")
    (root / "tfrecords").mkdir(exist_ok=True)
    (root / "tfrecords" / "manifest.json").write_text(json.dumps(
        {"preprocessing": {"size": size, "crop_fraction": 1.0}, "n_images": 0, "shards": []}))


def _complete_args(root, *extra):
    return ["--model", "dcgan", "--root", str(root), "--iterations", "4", "--save_every", "2",
            "--batch_size", "64", "--no-progress", *extra]


def _run_cli(root, *extra):
    """Run complete.py's entry point here; return its exit status."""
    with pytest.raises(SystemExit) as exit_info:
        run_main(complete.main, _complete_args(root, *extra))
    return exit_info.value.code


def _completions(root, mask="center"):
    return root / f"completions_stochastic_{mask}" / "dcgan" / "test"


def _image_folders(out):
    return sorted((p.name for p in out.iterdir() if p.is_dir() and p.name.isdigit()), key=int)


def _assert_files_complete(folder):
    """Every finished file under ``folder`` decodes completely; no temporary file is left."""
    for path in folder.rglob("*"):
        if path.is_dir():
            continue
        assert ".tmp" not in path.name, path
        if path.suffix in (".jpg", ".png"):
            decode_rgb(path)
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as saved:
                for key in saved.files:
                    saved[key]
        elif path.suffix == ".json":
            json.loads(path.read_text())


def test_complete_before_training_names_folder_and_command(tmp_path, capsys):
    root = _tiny_experiment(tmp_path)
    assert _run_cli(root) == 2
    err = capsys.readouterr().err
    assert str(root / "checkpoints" / "dcgan") in err
    assert "train.py --model dcgan" in err


def test_complete_three_images_batch_64_and_rerun(tmp_path, capsys):
    root = _tiny_experiment(tmp_path)
    checkpoint.save(GAN(get_spec("dcgan"), TINY, seed=0), root / "checkpoints" / "dcgan", 7)
    assert _run_cli(root) == 0
    out = _completions(root)
    assert _image_folders(out) == ["0", "1", "2"]
    for idx in _image_folders(out):
        assert sorted(p.name for p in (out / idx / "gen_images").iterdir()) == ["gen_2.jpg", "gen_4.jpg"]
        assert (out / idx / "gz" / "gz_4.jpg").exists()
        assert (out / idx / "gen_images_overlay" / "gen_4.jpg").exists()
        with np.load(out / idx / "z.npz", allow_pickle=False) as saved:
            assert saved["z"].shape == (8,)
            assert int(saved["iterations"]) == 4
            assert str(saved["blend_method"]) in ("poisson", "overlay")
            assert str(saved["mode"]) == "inpaint"
            assert np.isfinite(float(saved["ssim_blended"]))
    table = (out / "fill_quality.csv").read_text().splitlines()
    assert table[0] == CSV_HEADER
    assert [line.split(",")[0] for line in table[1:]] == ["0", "1", "2"]
    assert "final blending:" in capsys.readouterr().out

    first = (out / "fill_quality.csv").read_text()
    (out / "fill_quality.csv").unlink()
    stamp = (out / "0" / "gen_images" / "gen_4.jpg").stat().st_mtime_ns
    assert _run_cli(root) == 0
    assert "completed 0 image(s)" in capsys.readouterr().out
    assert (out / "0" / "gen_images" / "gen_4.jpg").stat().st_mtime_ns == stamp
    assert (out / "fill_quality.csv").read_text() == first

    assert _run_cli(root, "--lam", "0.1") == 2
    assert "--overwrite" in capsys.readouterr().err
    assert _run_cli(root, "--weighted_context") == 2
    assert "weighted_context" in capsys.readouterr().err


def test_complete_other_model_checkpoint_is_clear_error(tmp_path, capsys):
    root = _tiny_experiment(tmp_path)
    checkpoint.save(GAN(get_spec("wgan-gp"), TINY, seed=0), root / "checkpoints" / "dcgan", 1)
    assert _run_cli(root) == 2
    err = capsys.readouterr().err
    assert "wgan-gp" in err
    assert "--model is dcgan" in err


def test_complete_other_size_checkpoint_is_clear_error(tmp_path, capsys):
    root = _tiny_experiment(tmp_path)
    checkpoint.save(GAN(get_spec("dcgan"), Sizes(8, 2, 2, 32), seed=0), root / "checkpoints" / "dcgan", 1)
    assert _run_cli(root) == 2
    err = capsys.readouterr().err
    assert "32x32" in err
    assert "16x16" in err
    assert str(root / "checkpoints" / "dcgan") in err


def test_complete_bad_test_images(tmp_path, caplog, capsys):
    size = 64
    root = tmp_path / "exp"
    test_dir = root / "split" / "test"
    test_dir.mkdir(parents=True)
    Image.fromarray(synthetic_rgb(1, 80, 70)).convert("L").save(test_dir / "000000.png")
    rgba = np.dstack([synthetic_rgb(2, 72, 72), np.full((72, 72), 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(test_dir / "000001.png")
    Image.fromarray(synthetic_rgb(3, 30, 40)).save(test_dir / "000002.jpg")  # smaller than 64 px
    Image.fromarray(synthetic_rgb(4, 96, 96)).save(test_dir / "000003.jpg")
    whole = (test_dir / "000003.jpg").read_bytes()
    (test_dir / "000003.jpg").write_bytes(whole[: len(whole) // 2])
    names = sorted(p.name for p in test_dir.iterdir())
    _write_split(root, names, size)
    checkpoint.save(GAN(get_spec("dcgan"), Sizes(8, 2, 2, size), seed=0), root / "checkpoints" / "dcgan", 1)

    assert _run_cli(root, "--iterations", "2", "--save_every", "0") == 0
    assert "000003.jpg" in caplog.text
    assert "completed 3 image(s), 1 already done or unreadable" in capsys.readouterr().out
    out = _completions(root)
    assert _image_folders(out) == ["0", "1", "2"]
    for idx in ("0", "1", "2"):
        assert decode_rgb(out / idx / "original.jpg").shape == (size, size, 3)
        assert (out / idx / "z.npz").exists()
    rows = (out / "fill_quality.csv").read_text().splitlines()[1:]
    assert [row.split(",")[0] for row in rows] == ["0", "1", "2"]


def test_complete_full_mask_fill_quality_nan(tmp_path):
    root = _tiny_experiment(tmp_path, n_test=2)
    checkpoint.save(GAN(get_spec("dcgan"), TINY, seed=0), root / "checkpoints" / "dcgan", 1)
    assert _run_cli(root, "--maskType", "full", "--save_every", "0") == 0
    lines = (_completions(root, "full") / "fill_quality.csv").read_text().splitlines()
    assert lines[0] == CSV_HEADER
    assert lines[1:] == [f"{idx},nan,nan,nan,nan,nan,nan,overlay" for idx in (0, 1)]


def test_latent_mode_recovers_generated_image(tmp_path, capsys):
    gan = _responsive_generator()
    z_star = np.random.default_rng(1).uniform(-0.8, 0.8, (2, TINY.z_dim)).astype(np.float32)
    faces = to_uint8(gan.sample(z_star))
    root = tmp_path / "exp"
    test_dir = root / "split" / "test"
    test_dir.mkdir(parents=True)
    for i, face in enumerate(faces):
        Image.fromarray(face).save(test_dir / f"{i:06d}.png")  # lossless, so G(z*) is exact up to rounding
    _write_split(root, ["000000.png", "000001.png"], 16)
    checkpoint.save(gan, root / "checkpoints" / "dcgan", 1)

    assert _run_cli(root, "--mode", "latent", "--lr", "0.05", "--clipping", "standard",
                    "--iterations", "150", "--save_every", "0") == 0
    out = root / "completions_standard_full" / "dcgan" / "test"
    optimizer = LatentOptimizer(gan, make_mask("full", 16), InpaintSettings(lam=0.0))
    targets = to_unit_range(faces)
    start = optimizer.evaluate(initial_latents([0, 1], TINY.z_dim, 0), targets)[1]
    # Expected contextual loss of G(z*) against its uint8 copy: a rounding
    # error uniform in +-0.5 steps of 1/127.5 has mean magnitude 0.25 / 127.5.
    rounding = 16 * 16 * 3 * 0.25 / 127.5
    assert (start > 10 * rounding).all(), start
    for idx in (0, 1):
        folder = out / str(idx)
        assert sorted(p.name for p in folder.iterdir()) == ["gz", "original.jpg", "z.npz"]
        with np.load(folder / "z.npz", allow_pickle=False) as saved:
            assert str(saved["mode"]) == "latent"
            assert str(saved["blend_method"]) == "none"
            assert float(saved["perceptual_loss"]) >= 0  # recorded although lam is 0
            assert float(saved["contextual_loss"]) < 2 * rounding, start[idx]
            assert np.abs(saved["z"] - z_star[idx]).max() < 0.1
    assert not (out / "fill_quality.csv").exists()
    config = json.loads((out / "completion_config.json").read_text())
    assert config["mode"] == "latent"
    assert config["settings"]["lam"] == 0.0


def test_latent_mode_rejects_other_masks(tmp_path, capsys):
    root = _tiny_experiment(tmp_path)
    assert _run_cli(root, "--mode", "latent", "--maskType", "center") == 2
    err = capsys.readouterr().err
    assert "--maskType center" in err
    assert "full mask" in err


def test_complete_resumes_after_kill(tmp_path, capsys):
    root = _tiny_experiment(tmp_path)
    checkpoint.save(GAN(get_spec("dcgan"), TINY, seed=0), root / "checkpoints" / "dcgan", 1)
    args = _complete_args(root, "--iterations", "30", "--save_every", "1", "--batch_size", "1")
    out = _completions(root)
    process = subprocess.Popen([sys.executable, str(REPO / "complete.py"), *args],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        # Kill while the second image is being written, one JPEG after another.
        while process.poll() is None and not (out / "1" / "gz").is_dir():
            assert time.monotonic() < deadline, "complete.py wrote nothing within 120 s"
            time.sleep(0.02)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert (out / "0" / "z.npz").exists()
    for folder in (out / idx for idx in _image_folders(out)):
        for path in folder.rglob("*"):
            if path.is_file() and ".tmp" not in path.name and path.suffix == ".jpg":
                decode_rgb(path)
    unfinished = [idx for idx in ("0", "1", "2") if not (out / idx / "z.npz").exists()]
    stamp = (out / "0" / "gz" / "gz_30.jpg").stat().st_mtime_ns

    complete.main(args)
    assert f"completed {len(unfinished)} image(s)" in capsys.readouterr().out
    assert (out / "0" / "gz" / "gz_30.jpg").stat().st_mtime_ns == stamp
    _assert_files_complete(out)
    for idx in ("0", "1", "2"):
        assert len(list((out / idx / "gen_images").iterdir())) == 30
    assert len((out / "fill_quality.csv").read_text().splitlines()) == 4


def test_set_weights_switches_mask():
    gan = GAN(get_spec("dcgan"), TINY, seed=6)
    images = np.random.default_rng(7).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
    z = initial_latents([0, 1], TINY.z_dim, 0)
    optimizer = LatentOptimizer(gan, make_mask("center", 16), InpaintSettings())
    optimizer.evaluate(z, images)
    optimizer.set_weights(make_mask("left", 16))
    fresh = LatentOptimizer(gan, make_mask("left", 16), InpaintSettings())
    assert np.allclose(optimizer.evaluate(z, images)[1], fresh.evaluate(z, images)[1])


def test_mask_figure_writes_png(tmp_path, capsys):
    import figures_masks

    root = _tiny_experiment(tmp_path, n_test=1)
    checkpoint.save(GAN(get_spec("dcgan"), TINY, seed=0), root / "checkpoints" / "dcgan", 1)
    figures_masks.main(["--model", "dcgan", "--root", str(root), "--iterations", "2",
                        "--masks", "center", "full"])
    image = decode_rgb(root / "figures" / "masks.png")
    # Two rows of four tiles plus titles.
    assert image.shape[0] > 200
    assert image.shape[1] > 400
    assert "masks.png" in capsys.readouterr().out


def test_opencv_blend_is_the_studys_seamless_clone():
    from study.blend import opencv_blend

    original = synthetic_rgb(11, 64, 64)
    generated = synthetic_rgb(12, 64, 64)
    mask = make_mask("center", 64)
    blended, method = opencv_blend(original, generated, mask)
    assert method == "opencv"
    assert np.array_equal(blended[mask > 0.5], original[mask > 0.5])
    # The documented flaw of seamlessClone: the hole's outer ring keeps the original's pixels.
    ring = np.zeros((64, 64), bool)
    ring[16:48, 16:48] = True
    ring[17:47, 17:47] = False
    assert np.array_equal(blended[ring], original[ring])
    top_row = np.ones((64, 64), np.float32)
    top_row[0, :] = 0
    assert opencv_blend(original, generated, top_row)[1] == "overlay"


def test_complete_refuses_completions_of_another_split(tmp_path, capsys):
    root = _tiny_experiment(tmp_path)
    checkpoint.save(GAN(get_spec("dcgan"), TINY, seed=0), root / "checkpoints" / "dcgan", 7)
    assert _run_cli(root) == 0
    # A new split lists other test images under the same indices.
    names = ["000002.jpg", "000000.jpg", "000001.jpg"]
    (root / "split" / "test.txt").write_text("\n".join(sorted(names)[::-1]) + "\n")
    assert _run_cli(root) == 2
    assert "test_images" in capsys.readouterr().err


def test_corrupt_newest_checkpoint_is_named(tmp_path, capsys):
    root = _tiny_experiment(tmp_path)
    folder = root / "checkpoints" / "dcgan"
    checkpoint.save(GAN(get_spec("dcgan"), TINY, seed=0), folder, 3)
    newest = checkpoint.save(GAN(get_spec("dcgan"), TINY, seed=0), folder, 6)
    newest.write_bytes(newest.read_bytes()[:100])
    assert _run_cli(root) == 2
    err = capsys.readouterr().err
    assert "ckpt-00000006.npz" in err
    assert "ckpt-00000003.npz" in err


@pytest.mark.parametrize("flag, value", [("--lr", "nan"), ("--lr", "0"), ("--lam", "inf")])
def test_complete_rejects_non_finite_settings(tmp_path, capsys, flag, value):
    root = _tiny_experiment(tmp_path)
    checkpoint.save(GAN(get_spec("dcgan"), TINY, seed=0), root / "checkpoints" / "dcgan", 7)
    assert _run_cli(root, flag, value) == 2
    assert f"{flag} must be a finite number" in capsys.readouterr().err
    assert not list(root.glob("completions_*/**/z.npz"))


def test_complete_non_finite_loss_stops(tmp_path, capsys):
    root = _tiny_experiment(tmp_path)
    gan = GAN(get_spec("dcgan"), TINY, seed=0)
    first = gan.generator.trainable_variables[0]
    first.assign(tf.fill(first.shape, float("nan")))
    checkpoint.save(gan, root / "checkpoints" / "dcgan", 7)
    assert _run_cli(root) == 2
    err = capsys.readouterr().err
    assert "non-finite for test image(s) [0, 1, 2]" in err
    assert "--overwrite" in err
    assert not list(_completions(root).glob("*/z.npz"))
    assert not list(_completions(root).glob("*/gen_images"))


def test_complete_non_finite_row_keeps_others(tmp_path, capsys, monkeypatch):
    root = _tiny_experiment(tmp_path)
    checkpoint.save(GAN(get_spec("dcgan"), TINY, seed=0), root / "checkpoints" / "dcgan", 7)
    real_evaluate = LatentOptimizer.evaluate

    def evaluate_with_nan_row(self, z, images):
        total, contextual, perceptual = real_evaluate(self, z, images)
        total = np.array(total, dtype=np.float64)
        total[1] = np.nan
        return total, contextual, perceptual

    monkeypatch.setattr(LatentOptimizer, "evaluate", evaluate_with_nan_row)
    assert _run_cli(root) == 2
    assert "test image(s) [1]" in capsys.readouterr().err
    out = _completions(root)
    assert sorted(p.parent.name for p in out.glob("*/z.npz")) == ["0", "2"]
    assert not (out / "1" / "gen_images").exists()
    assert (out / "1" / "original.jpg").exists()
    rows = (out / "fill_quality.csv").read_text().splitlines()[1:]
    assert [line.split(",")[0] for line in rows] == ["0", "2"]


def test_complete_retrained_checkpoint_same_step(tmp_path, capsys):
    root = _tiny_experiment(tmp_path)
    folder = root / "checkpoints" / "dcgan"
    checkpoint.save(GAN(get_spec("dcgan"), TINY, seed=0), folder, 7)
    assert _run_cli(root) == 0
    capsys.readouterr()
    checkpoint.save(GAN(get_spec("dcgan"), TINY, seed=1), folder, 7)   # retrained, same step
    assert _run_cli(root) == 2
    err = capsys.readouterr().err
    assert "checkpoint/sha256: earlier" in err
    assert "--overwrite" in err
