"""Preprocessing, the train/test split, the TFRecord conversion and their bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, synthetic_rgb
from study.images import Preprocessing, UnreadableImage, crop_and_resize, decode_rgb, load_face
from study.split import (ImageDatabaseConflict, SplitError, build_image_database, choose_test_set,
                         split_dataset)


def run_script(*args, cwd=REPO):
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


# ----- preprocessing -------------------------------------------------------------


def test_crop_takes_central_fraction_of_short_edge():
    # A 100x200 image whose columns encode their x coordinate.
    rgb = np.zeros((100, 200, 3), np.uint8)
    rgb[:, :, 0] = np.arange(200)[None, :] % 256
    rgb[:, :, 1] = np.arange(100)[:, None]
    out = crop_and_resize(rgb, Preprocessing(size=50, crop_fraction=0.5))
    # Square side 100, central half = 50 px: rows 25..74, columns 75..124, no resampling needed.
    assert out.shape == (50, 50, 3)
    assert out[0, 0, 0] == 75 and out[0, -1, 0] == 124
    assert out[0, 0, 1] == 25 and out[-1, 0, 1] == 74


def test_default_crop_is_64_of_82():
    assert Preprocessing().crop_fraction == pytest.approx(64 / 82)
    assert Preprocessing().size == 64


def test_decode_converts_gray_rgba_palette(tmp_path):
    gray = tmp_path / "gray.jpg"
    Image.fromarray(np.full((70, 70), 100, np.uint8), mode="L").save(gray)
    rgba = tmp_path / "rgba.png"
    pixels = np.zeros((70, 70, 4), np.uint8)
    pixels[..., 0] = 200
    pixels[..., 3] = 255
    pixels[:10, :, 3] = 0  # transparent band composites to black
    Image.fromarray(pixels, mode="RGBA").save(rgba)
    palette = tmp_path / "palette.png"
    Image.fromarray(synthetic_rgb(1, 70, 70)).convert("P").save(palette)

    for path in (gray, rgba, palette):
        assert decode_rgb(path).shape == (70, 70, 3)
    assert abs(int(decode_rgb(gray)[5, 5, 0]) - 100) <= 2
    assert tuple(decode_rgb(rgba)[40, 40]) == (200, 0, 0)
    assert tuple(decode_rgb(rgba)[2, 2]) == (0, 0, 0)


def test_truncated_jpeg_is_unreadable(tmp_path):
    good = tmp_path / "good.jpg"
    Image.fromarray(synthetic_rgb(3)).save(good)
    data = good.read_bytes()
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(UnreadableImage, match="bad.jpg"):
        decode_rgb(bad)


def test_small_image_is_upsampled(tmp_path):
    path = tmp_path / "small.png"
    Image.fromarray(synthetic_rgb(4, 40, 30)).save(path)
    assert load_face(path).shape == (64, 64, 3)


# ----- split ----------------------------------------------------------------------


def test_split_is_reproducible_and_disjoint():
    names = [f"{i:06d}.jpg" for i in range(50)]
    train_a, test_a = choose_test_set(names, 10, seed=7)
    train_b, test_b = choose_test_set(names, 10, seed=7)
    _, test_c = choose_test_set(names, 10, seed=8)
    assert test_a == test_b
    assert train_a == train_b
    assert test_a != test_c
    assert len(test_a) == 10
    assert len(train_a) == 40
    assert set(train_a).isdisjoint(test_a)
    assert sorted(train_a + test_a) == names


def test_split_rejects_too_large_test_set():
    with pytest.raises(SplitError, match="smaller than the number of readable images"):
        choose_test_set(["a.jpg", "b.jpg"], 2, seed=0)


def test_split_leaves_dataset_untouched(image_folder, tmp_path):
    (image_folder / "notes.txt").write_text("not an image")
    before = sorted((p.name, p.stat().st_size) for p in image_folder.iterdir())
    result = split_dataset(image_folder, tmp_path / "split", tmp_path / "split" / "test", 3, seed=1,
                           progress=False)
    after = sorted((p.name, p.stat().st_size) for p in image_folder.iterdir())
    assert before == after
    assert result.skipped == ["notes.txt"]
    manifest = json.loads((tmp_path / "split" / "manifest.json").read_text())
    assert manifest["n_test"] == 3
    assert manifest["n_train"] == 9
    assert manifest["seed"] == 1
    assert sorted(p.name for p in (tmp_path / "split" / "test").iterdir()) == result.test


def test_split_rerun_reuses_and_conflict_fails(image_folder, tmp_path):
    first = split_dataset(image_folder, tmp_path / "s", tmp_path / "s" / "test", 3, seed=1, progress=False)
    again = split_dataset(image_folder, tmp_path / "s", tmp_path / "s" / "test", 3, seed=1, progress=False)
    assert again.reused
    assert again.test == first.test
    with pytest.raises(SplitError, match="seed: existing 1, requested 2"):
        split_dataset(image_folder, tmp_path / "s", tmp_path / "s" / "test", 3, seed=2, progress=False)
    assert (tmp_path / "s" / "test.txt").read_text().split() == first.test


def test_split_cli_empty_folder_is_clear_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_script(REPO / "split_train_test.py", "--data", empty, "--root", tmp_path / "exp",
                        "--n_test", "1", "--no-progress")
    assert result.returncode == 2
    assert "no readable images" in result.stderr
    assert str(empty) in result.stderr


def _completion(root, model, gen_seeds, original_seed=0):
    """Write test image 0 of ``model``: original, masked and ``gen_<iteration>.jpg`` per seed."""
    folder = root / model / "test" / "0"
    (folder / "gen_images").mkdir(parents=True)
    Image.fromarray(synthetic_rgb(original_seed, 64, 64)).save(folder / "original.jpg")
    Image.fromarray(synthetic_rgb(1, 64, 64)).save(folder / "masked.jpg")
    for iteration, seed in gen_seeds.items():
        Image.fromarray(synthetic_rgb(seed, 64, 64)).save(folder / "gen_images" / f"gen_{iteration}.jpg")
    return folder


def test_image_database_picks_final_iteration(tmp_path):
    root = tmp_path / "completions_stochastic_center"
    for model, offset in (("m1", 0), ("m2", 10)):
        _completion(root, model, {100: 2 + offset, 1500: 3 + offset, 250: 4 + offset})
    counts = build_image_database(root, tmp_path / "db")
    assert counts["m1"] == 1
    assert counts["m2"] == 1
    for model in ("m1", "m2"):
        assert ((tmp_path / "db" / "0" / "gen" / f"{model}.jpg").read_bytes()
                == (root / model / "test" / "0" / "gen_images" / "gen_1500.jpg").read_bytes())


def test_image_database_rejects_changed_completion(tmp_path):
    root = tmp_path / "completions_stochastic_center"
    _completion(root, "m1", {600: 2})
    _completion(root, "m2", {600: 3})
    db = tmp_path / "db"
    build_image_database(root, db)
    before = (db / "0" / "gen" / "m1.jpg").read_bytes()
    record = (db / "database.json").read_text()
    # m1 retrained: its new inpainting differs from the one in the database.
    new_image = root / "m1" / "test" / "0" / "gen_images" / "gen_600.jpg"
    Image.fromarray(synthetic_rgb(7, 64, 64)).save(new_image)
    with pytest.raises(ImageDatabaseConflict, match="models with new inpaintings: m1") as caught:
        build_image_database(root, db)
    assert "--clipping stochastic --maskType center --overwrite" in str(caught.value)
    assert (db / "0" / "gen" / "m1.jpg").read_bytes() == before
    assert (db / "database.json").read_text() == record
    counts = build_image_database(root, db, overwrite=True)
    assert counts["replaced"] == 1
    assert (db / "0" / "gen" / "m1.jpg").read_bytes() == new_image.read_bytes()


def test_image_database_rejects_models_from_other_splits(tmp_path):
    root = tmp_path / "completions_stochastic_center"
    _completion(root, "m1", {600: 2}, original_seed=0)
    _completion(root, "m2", {600: 2}, original_seed=5)
    with pytest.raises(ImageDatabaseConflict, match="m1 and m2 contain different copies of original.jpg"):
        build_image_database(root, tmp_path / "db", overwrite=True)
    assert not (tmp_path / "db").exists()


# ----- conversion -------------------------------------------------------------------


def _make_messy_folder(folder):
    folder.mkdir()
    Image.fromarray(synthetic_rgb(0)).save(folder / "a_rgb.jpg")
    Image.fromarray(np.full((80, 80), 90, np.uint8), mode="L").save(folder / "b_gray.jpg")
    rgba = np.dstack([synthetic_rgb(1, 80, 80), np.full((80, 80), 255, np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(folder / "c_rgba.png")
    (folder / "d_notes.txt").write_text("hello")
    Image.fromarray(synthetic_rgb(2)).save(folder / "e_trunc.jpg")
    data = (folder / "e_trunc.jpg").read_bytes()
    (folder / "e_trunc.jpg").write_bytes(data[: len(data) // 3])
    Image.fromarray(synthetic_rgb(5, 40, 30)).save(folder / "f_small.jpg")


def test_convert_messy_folder_counts_add_up(tmp_path):
    import tensorflow as tf

    from study.tfrecords import parse_record

    data = tmp_path / "messy"
    _make_messy_folder(data)
    out = tmp_path / "records"
    result = run_script(REPO / "convert.py", "--data", data, "--list", "all", "--out", out,
                        "--shards", "128", "--no-progress")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["n_images"] == 4  # rgb, gray, rgba, small
    assert manifest["n_input"] == 5  # the text file is not an image candidate
    assert manifest["n_images"] + manifest["n_skipped"] == manifest["n_input"]
    assert any("e_trunc.jpg" in name for name in manifest["skipped"])
    assert "e_trunc.jpg" in result.stderr
    # Never more shards than images, every image in exactly one record.
    assert len(manifest["shards"]) == 4
    files = [str(out / s["file"]) for s in manifest["shards"]]
    images = [parse_record(r).numpy() for r in tf.data.TFRecordDataset(files)]
    assert len(images) == 4
    assert all(img.shape == (64, 64, 3) for img in images)
    assert min(img.min() for img in images) >= -1.0 and max(img.max() for img in images) <= 1.0
    expected = load_face(data / "a_rgb.jpg").astype(np.float32) / 127.5 - 1.0
    assert np.allclose(images[0], expected)


def test_convert_rerun_keeps_records_unless_overwrite(tmp_path, image_folder):
    out = tmp_path / "records"
    args = (REPO / "convert.py", "--data", image_folder, "--list", "all", "--out", out, "--shards", "3",
            "--no-progress")
    assert run_script(*args).returncode == 0
    stamp = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tfrecord")}
    assert run_script(*args).returncode == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.tfrecord")} == stamp
    changed = run_script(*args[:-3], "--shards", "3", "--crop_fraction", "1.0", "--no-progress")
    assert changed.returncode == 2
    assert "--overwrite" in changed.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.tfrecord")} == stamp


def test_convert_empty_folder_is_clear_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_script(REPO / "convert.py", "--data", empty, "--list", "all", "--out", tmp_path / "r")
    assert result.returncode == 2
    assert "no images to convert" in result.stderr


def test_convert_overwrite_replaces_only_its_own_shards(tmp_path, image_folder):
    from study.images import list_image_files
    from study.tfrecords import convert

    paths, _ = list_image_files(image_folder)
    out = tmp_path / "records"
    convert(paths[:6], out, n_shards=3, prep=Preprocessing(size=16), progress=False)
    foreign = out / "someone-else.tfrecord"
    foreign.write_bytes(b"not ours")
    manifest = convert(paths[:6], out, n_shards=2, prep=Preprocessing(size=16, crop_fraction=1.0),
                       overwrite=True, progress=False)
    assert foreign.read_bytes() == b"not ours"
    assert sorted(p.name for p in out.glob("train-*.tfrecord")) == sorted(
        s["file"] for s in manifest["shards"])
    assert len(manifest["shards"]) == 2


def test_convert_refuses_folder_of_foreign_records(tmp_path, image_folder):
    from study.images import list_image_files
    from study.tfrecords import convert

    paths, _ = list_image_files(image_folder)
    out = tmp_path / "records"
    out.mkdir()
    foreign = out / "train-00000-of-00001.tfrecord"
    foreign.write_bytes(b"not ours")
    with pytest.raises(FileExistsError, match="shards that convert.py did not write"):
        convert(paths[:4], out, n_shards=1, prep=Preprocessing(size=16), progress=False)
    assert foreign.read_bytes() == b"not ours"
    assert sorted(p.name for p in out.iterdir()) == [foreign.name]


def test_damaged_manifest_error_names_the_file(tmp_path, image_folder):
    out = tmp_path / "records"
    args = (REPO / "convert.py", "--data", image_folder, "--list", "all", "--out", out, "--shards", "2",
            "--no-progress")
    assert run_script(*args).returncode == 0
    manifest = out / "manifest.json"
    manifest.write_text(manifest.read_text()[:40])
    result = run_script(*args)
    assert result.returncode == 2
    assert f"{manifest} is not valid JSON" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("root_inside", ["same", "below"])
def test_split_refuses_root_inside_data(image_folder, root_inside):
    before = sorted(p.name for p in image_folder.rglob("*"))
    root = image_folder if root_inside == "same" else image_folder / "experiment"
    result = run_script(REPO / "split_train_test.py", "--data", image_folder, "--root", root,
                        "--n_test", "2", "--no-progress")
    assert result.returncode == 2
    assert "overlap" in result.stderr
    assert str(image_folder) in result.stderr
    assert sorted(p.name for p in image_folder.rglob("*")) == before


def test_convert_resumes_after_kill_before_manifest(tmp_path, image_folder, monkeypatch):
    from study import tfrecords
    from study.images import list_image_files

    paths, _ = list_image_files(image_folder)
    out = tmp_path / "records"
    real_write = tfrecords.write_json_atomic

    def killed_at_manifest(path, data):
        if path.name == "manifest.json":
            raise KeyboardInterrupt
        return real_write(path, data)

    monkeypatch.setattr(tfrecords, "write_json_atomic", killed_at_manifest)
    with pytest.raises(KeyboardInterrupt):
        tfrecords.convert(paths[:6], out, n_shards=3, prep=Preprocessing(size=16), progress=False)
    assert len(list(out.glob("train-*.tfrecord"))) == 3
    monkeypatch.undo()

    # Rerun with another shard count: the interrupted run's shards are replaced, not refused.
    manifest = tfrecords.convert(paths[:6], out, n_shards=2, prep=Preprocessing(size=16), progress=False)
    assert manifest["n_images"] == 6
    assert sorted(p.name for p in out.glob("train-*.tfrecord")) == sorted(s["file"] for s in manifest["shards"])
    assert not (out / tfrecords.PARTIAL).exists()
