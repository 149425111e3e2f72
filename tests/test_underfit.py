"""Nearest-neighbour search and the underfit stage on a tiny root built by hand."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from study.images import decode_rgb, load_face, save_rgb
from facenet.distance import cosine_distance_matrix
from study.nearest import nearest_neighbors, valid_rows
from study.split import SplitError, choose_test_identities, read_identities, split_dataset
from study.underfit import UnderfitConfig, run_underfit

REPO = Path(__file__).resolve().parent.parent
SQRT_HALF_DISTANCE = 1.0 - 1.0 / math.sqrt(2.0)


# --- nearest_neighbors against a brute-force reference ---------------------------

def brute_force(queries, train, k):
    """Sort every float64 distance, ties to the lower index, invalid rows as nearest_neighbors documents."""
    queries = np.asarray(queries, dtype=np.float64)
    train = np.asarray(train, dtype=np.float64)
    train_ok = np.isfinite(train).all(1) & (train != 0).any(1)
    query_ok = np.isfinite(queries).all(1) & (queries != 0).any(1)
    k = min(k, int(train_ok.sum()))
    indices = np.full((len(queries), k), -1)
    distances = np.full((len(queries), k), np.nan)
    normalized_train = np.zeros_like(train)
    normalized_train[train_ok] = train[train_ok] / np.linalg.norm(train[train_ok], axis=1, keepdims=True)
    for row in np.flatnonzero(query_ok):
        query = queries[row] / np.linalg.norm(queries[row])
        all_distances = np.clip(1.0 - normalized_train @ query, 0.0, 2.0)
        all_distances[~train_ok] = np.inf
        order = np.lexsort((np.arange(len(train)), all_distances))[:k]
        indices[row] = order
        distances[row] = all_distances[order]
    return indices, distances


@pytest.mark.parametrize("n_queries, n_train, dim, k, chunk", [
    (7, 50, 8, 5, 13),     # chunk smaller than N, not a divisor
    (7, 50, 8, 5, 50),     # one chunk
    (7, 50, 8, 5, 1),      # one row per chunk
    (4, 6, 5, 3, 4),       # chunk between k and N
    (200, 3000, 64, 10, 256),
    (30, 400, 8, 20, 64),      # k above SMALL_K: the argpartition path
    (30, 400, 8, 20, 15),      # ... with chunks smaller than k
])
def test_nearest_matches_brute_force(n_queries, n_train, dim, k, chunk):
    rng = np.random.default_rng(n_train + chunk)
    queries = rng.normal(size=(n_queries, dim)).astype(np.float32)
    train = rng.normal(size=(n_train, dim)).astype(np.float32)

    indices, distances = nearest_neighbors(queries, train, k, chunk=chunk)
    expected_indices, expected_distances = brute_force(queries, train, k)

    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(distances, expected_distances, atol=1e-6, rtol=0)
    assert indices.dtype == np.int64


def test_nearest_k_larger_than_train():
    rng = np.random.default_rng(1)
    queries = rng.normal(size=(3, 4))
    train = rng.normal(size=(4, 4))

    indices, distances = nearest_neighbors(queries, train, k=10, chunk=3)
    expected_indices, expected_distances = brute_force(queries, train, 10)

    assert indices.shape == (3, 4)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(distances, expected_distances, atol=1e-6, rtol=0)


def test_nearest_single_train_vector():
    queries = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    train = np.array([[2.0, 0.0]])

    indices, distances = nearest_neighbors(queries, train, k=3)

    np.testing.assert_array_equal(indices, [[0], [0], [0]])
    np.testing.assert_allclose(distances[:, 0], [0.0, 1.0, 2.0], atol=1e-12)


def test_nearest_ties_go_to_lower_index():
    # Axis vectors give exact dot products, so equal distances are exactly equal.
    axes = np.eye(3)
    train = axes[[1, 0, 2, 0, 1, 0, 0, 2]]
    queries = axes[[0, 1, 2]]

    for chunk in (1, 2, 3, 8):
        indices, distances = nearest_neighbors(queries, train, k=5, chunk=chunk)
        np.testing.assert_array_equal(indices[0], [1, 3, 5, 6, 0], err_msg=f"chunk {chunk}")
        np.testing.assert_array_equal(indices[1], [0, 4, 1, 2, 3], err_msg=f"chunk {chunk}")
        np.testing.assert_array_equal(indices[2], [2, 7, 0, 1, 3], err_msg=f"chunk {chunk}")
        np.testing.assert_allclose(distances[0], [0, 0, 0, 0, 1])


def test_nearest_distances_match_facenet_distance():
    # Near-identical pairs go through the recomputation below RECOMPUTE_BELOW.
    rng = np.random.default_rng(5)
    train = rng.normal(size=(300, 16)).astype(np.float32)
    queries = np.concatenate([train[:20] * 3.0 + 1e-4 * rng.normal(size=(20, 16)).astype(np.float32),
                              rng.normal(size=(20, 16)).astype(np.float32)])

    indices, distances = nearest_neighbors(queries, train, k=4, chunk=70)
    expected = cosine_distance_matrix(queries, train)

    np.testing.assert_allclose(distances, np.take_along_axis(expected, indices, axis=1), rtol=0, atol=1e-12)
    assert (distances[:20, 0] < 1e-4).all()


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_valid_rows_same_rule_for_every_dtype(dtype):
    tiny = np.finfo(dtype).smallest_subnormal
    vectors = np.array([[1.0, 2.0], [0.0, 0.0], [np.nan, 1.0], [np.inf, 0.0], [tiny, 0.0],
                        [np.finfo(dtype).max, np.finfo(dtype).max]], dtype=dtype)

    # In float64 the norm of the smallest subnormal underflows to 0 and that of max overflows.
    wide = dtype == np.float64
    expected = [True, False, False, False, not wide, not wide]

    np.testing.assert_array_equal(valid_rows(vectors), expected)


@pytest.mark.parametrize("k", [3, 20])
def test_nearest_ties_large_and_small_k(k):
    # 40 copies of the query direction among 100 rows: the lowest indices win.
    rng = np.random.default_rng(3)
    train = rng.normal(size=(100, 4))
    copies = np.arange(2, 100, 2)[:40]
    train[copies] = [0.0, 2.0, 0.0, 0.0]

    for chunk in (7, 100):
        indices, _ = nearest_neighbors(np.array([[0.0, 1.0, 0.0, 0.0]]), train, k=k, chunk=chunk)
        np.testing.assert_array_equal(indices[0], copies[:k], err_msg=f"chunk {chunk}")


def test_nearest_many_ties_inside_one_chunk():
    # 28 copies of the query direction; argpartition alone could pick any 3 of them.
    rng = np.random.default_rng(2)
    train = rng.normal(size=(60, 4))
    copies = np.arange(5, 60, 2)
    train[copies] = [0.0, 0.0, 0.0, 3.0]

    indices, distances = nearest_neighbors(np.array([[0.0, 0.0, 0.0, 1.0]]), train, k=3, chunk=60)

    np.testing.assert_array_equal(indices[0], copies[:3])
    np.testing.assert_allclose(distances[0], 0.0, atol=1e-12)


def test_nearest_empty_train_raises():
    with pytest.raises(ValueError, match="empty"):
        nearest_neighbors(np.ones((2, 3)), np.zeros((0, 3)), k=1)


def test_nearest_invalid_arguments_raise():
    with pytest.raises(ValueError, match="k must be"):
        nearest_neighbors(np.ones((1, 2)), np.ones((3, 2)), k=0)
    with pytest.raises(ValueError, match="chunk"):
        nearest_neighbors(np.ones((1, 2)), np.ones((3, 2)), k=1, chunk=0)
    with pytest.raises(ValueError, match="queries must be"):
        nearest_neighbors(np.ones((1, 3)), np.ones((3, 2)), k=1)


def test_nearest_excludes_zero_and_nan_rows(caplog):
    train = np.array([[1.0, 0.0], [0.0, 0.0], [np.nan, 1.0], [0.0, 1.0], [1.0, 0.1]])
    queries = np.array([[1.0, 0.0], [0.0, 0.0], [np.inf, 0.0]])
    train_keys = ["a.jpg", "zero.jpg", "nan.jpg", "d.jpg", "e.jpg"]

    with caplog.at_level(logging.WARNING):
        indices, distances = nearest_neighbors(queries, train, k=4, chunk=2,
                                               query_keys=["q0", "q-zero", "q-inf"],
                                               train_keys=train_keys)

    assert indices.shape == (3, 3)   # 3 valid training rows
    np.testing.assert_array_equal(indices[0], [0, 4, 3])
    np.testing.assert_array_equal(indices[1:], -1)
    assert np.isnan(distances[1:]).all()
    assert "zero.jpg" in caplog.text
    assert "nan.jpg" in caplog.text
    assert "q-zero" in caplog.text
    assert "q-inf" in caplog.text


def test_nearest_all_train_invalid_raises():
    with pytest.raises(ValueError, match="none of the 2 training vectors"):
        nearest_neighbors(np.ones((1, 2)), np.zeros((2, 2)), k=1)


# --- a tiny experiment root -----------------------------------------------------

TRAIN = ["t0.jpg", "t1.jpg", "t2.jpg", "t3.jpg"]
TEST = ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
TRAIN_VECTORS = {"t0.jpg": [1, 0, 0], "t1.jpg": [0, 1, 0], "t2.jpg": [0, 0, 1], "t3.jpg": [1, 1, 0]}
TEST_VECTORS = {"a.jpg": [1, 0, 0], "b.jpg": [0, 0, 1], "c.jpg": [0, 1, 1], "d.jpg": [1, 1, 1]}
# idx -> G(z) embedding. Expected by hand (k = 3):
#   0: d_test 0, nearest t0 at 0            -> gap 0 (boundary)  -> generalized
#   1: d_test 1, nearest t1 at 0            -> gap 1             -> recall
#   2: d_test 0, nearest t1 at 1 - 1/sqrt 2 -> gap -(1 - 1/sqrt 2) -> generalized
#   3: zero vector                          -> excluded
GZ_VECTORS = {"2": [0, 1, 1], "0": [1, 0, 0], "3": [0, 0, 0], "1": [0, 1, 0]}
FINAL_ITERATION = 200


def solid(colour) -> np.ndarray:
    return np.full((64, 64, 3), colour, dtype=np.uint8)


def write_embeddings(folder: Path, source: str, protocol: str, vectors: dict,
                     stored_protocol: str | None = None, **extra) -> Path:
    keys = list(vectors)
    path = folder / f"{source}__{protocol}.npz"
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(path, keys=np.array(keys), paths=np.array([f"/data/{key}" for key in keys]),
             sha256=np.array(["0" * 64] * len(keys)), face_found=np.ones(len(keys), dtype=bool),
             embeddings=np.array([vectors[key] for key in keys], dtype=np.float32),
             protocol=np.array(stored_protocol or protocol), source=np.array(source), **extra)
    return path


@pytest.fixture
def root(tmp_path) -> Path:
    """An experiment root with a split, completions of model ``dcgan`` and embeddings."""
    from conftest import synthetic_rgb

    root = tmp_path / "root"
    data = tmp_path / "data"
    for i, name in enumerate(TRAIN):
        save_rgb(data / name, synthetic_rgb(100 + i, 90, 80))
    split = root / "split"
    split.mkdir(parents=True)
    (split / "train.txt").write_text("\n".join(TRAIN) + "\n")
    (split / "test.txt").write_text("\n".join(TEST) + "\n")
    (split / "manifest.json").write_text(json.dumps({"data_dir": str(data), "seed": 0, "n_test": 4}))

    completions = root / "completions_stochastic_center" / "dcgan" / "test"
    for idx in range(len(TEST)):
        folder = completions / str(idx)
        save_rgb(folder / "original.jpg", solid((200, 10 * idx, 0)))
        save_rgb(folder / "masked.jpg", solid((255, 255, 255)))
        for iteration in (100, FINAL_ITERATION):
            shade = 40 if iteration == FINAL_ITERATION else 220
            save_rgb(folder / "gen_images" / f"gen_{iteration}.jpg", solid((0, shade, 30 * idx)))
            save_rgb(folder / "gen_images_overlay" / f"gen_{iteration}.jpg", solid((shade, 0, 30 * idx)))
            save_rgb(folder / "gz" / f"gz_{iteration}.jpg", solid((30 * idx, shade, shade)))

    embeddings = root / "embeddings"
    write_embeddings(embeddings, "train", "facenet", TRAIN_VECTORS)
    write_embeddings(embeddings, "test", "facenet",
                     {name: TEST_VECTORS[name] for name in ("c.jpg", "a.jpg", "d.jpg", "b.jpg")})
    write_embeddings(embeddings, "inpaint_dcgan", "facenet", GZ_VECTORS)
    return root


def run(root: Path, **overrides):
    options = {"root": str(root), "model": "dcgan", "k": 3, "progress": False, **overrides}
    return run_underfit(UnderfitConfig(**options))


def test_underfit_csv_matches_hand_values(root):
    result = run(root)
    table = pd.read_csv(root / "underfit" / "dcgan" / "underfit.csv", keep_default_na=False,
                        na_values=[""])

    assert list(table["idx"]) == [0, 1, 2, 3]
    assert list(table["test_file"]) == TEST
    np.testing.assert_allclose(table["d_test"][:3], [0.0, 1.0, 0.0], atol=1e-7)
    assert np.isnan(table["d_test"][3])
    assert list(table["train_file_1"][:3]) == ["t0.jpg", "t1.jpg", "t1.jpg"]
    # Ties at equal distance go to the lower training row: t1 before t2.
    assert list(table.loc[0, ["train_file_2", "train_file_3"]]) == ["t3.jpg", "t1.jpg"]
    assert list(table.loc[2, ["train_file_2", "train_file_3"]]) == ["t2.jpg", "t3.jpg"]
    np.testing.assert_allclose(table["d_train_1"][:3], [0.0, 0.0, SQRT_HALF_DISTANCE], atol=1e-7)
    np.testing.assert_allclose(table["gap"][:3], [0.0, 1.0, -SQRT_HALF_DISTANCE], atol=1e-7)
    assert np.isnan(table["gap"][3])
    assert list(table["bucket"]) == ["generalized", "recall", "generalized", "excluded"]
    assert result.mean_gap == pytest.approx((1.0 - SQRT_HALF_DISTANCE) / 3, abs=1e-7)
    assert result.buckets == {"generalized": 2, "recall": 1}
    assert result.n_excluded == 1


def test_underfit_mosaics_in_bucket_folders(root):
    run(root)
    out = root / "underfit" / "dcgan"

    assert sorted(p.name for p in (out / "generalized").iterdir()) == ["0.jpg", "2.jpg"]
    assert sorted(p.name for p in (out / "recall").iterdir()) == ["1.jpg"]
    assert not (out / "excluded").exists()
    assert list((out / "provenance").glob("underfit-*.json"))
    assert (out / "inputs.json").exists()


def test_underfit_mosaic_tiles(root):
    run(root)
    mosaic = decode_rgb(root / "underfit" / "dcgan" / "recall" / "1.jpg").astype(np.float64)
    tiles = 5 + 3

    assert mosaic.shape == (64, tiles * 64 + (tiles - 1) * 2, 3)

    def tile(i):
        return mosaic[:, i * 66:i * 66 + 64]

    # Tiles 2-4 come from the final iteration (shade 40), not iteration 100 (shade 220).
    np.testing.assert_allclose(tile(2).mean(axis=(0, 1)), [0, 40, 30], atol=6)
    np.testing.assert_allclose(tile(3).mean(axis=(0, 1)), [40, 0, 30], atol=6)
    np.testing.assert_allclose(tile(4).mean(axis=(0, 1)), [30, 40, 40], atol=6)
    # The nearest training face is t1.jpg, cropped like every other face.
    manifest = json.loads((root / "split" / "manifest.json").read_text())
    nearest = load_face(Path(manifest["data_dir"]) / "t1.jpg").astype(np.float64)
    assert np.abs(tile(5) - nearest).mean() < 6


def test_underfit_rerun_same_inputs_skips(root):
    run(root)
    csv = root / "underfit" / "dcgan" / "underfit.csv"
    before = csv.stat().st_mtime_ns

    again = run(root)

    assert again.already_done
    assert csv.stat().st_mtime_ns == before
    assert again.mean_gap == pytest.approx((1.0 - SQRT_HALF_DISTANCE) / 3, abs=1e-7)


def test_underfit_other_inputs_need_overwrite(root):
    run(root)

    with pytest.raises(FileExistsError, match="--overwrite"):
        run(root, k=2)
    result = run(root, k=2, overwrite=True)

    table = pd.read_csv(root / "underfit" / "dcgan" / "underfit.csv")
    assert not result.already_done
    assert "train_file_2" in table.columns
    assert "train_file_3" not in table.columns


def test_underfit_protocol_mismatch_names_both(root):
    write_embeddings(root / "embeddings", "test", "facenet", TEST_VECTORS, stored_protocol="vggface2")

    with pytest.raises(ValueError) as error:
        run(root)

    assert "'facenet'" in str(error.value)
    assert "'vggface2'" in str(error.value)


def test_underfit_several_protocols_need_choice(root):
    for source, vectors in (("train", TRAIN_VECTORS), ("test", TEST_VECTORS), ("inpaint_dcgan", GZ_VECTORS)):
        write_embeddings(root / "embeddings", source, "other", vectors)

    with pytest.raises(ValueError, match="--protocol"):
        run(root)
    assert run(root, protocol="other").buckets == {"generalized": 2, "recall": 1}


@pytest.mark.parametrize("source, expected", [
    ("inpaint_dcgan", "--src inpaint --gan dcgan"),
    ("train", "--src train"),
])
def test_underfit_missing_embeddings_names_command(root, source, expected):
    (root / "embeddings" / f"{source}__facenet.npz").unlink()

    with pytest.raises(FileNotFoundError) as error:
        run(root)

    assert f"python facenet/calculate_embeddings.py --root {root} {expected}" in str(error.value)


def test_underfit_rejects_partial_embeddings(root):
    write_embeddings(root / "embeddings", "inpaint_dcgan", "facenet", GZ_VECTORS, complete=np.array(False))

    with pytest.raises(ValueError, match="unfinished") as error:
        run(root)

    assert "--src inpaint --gan dcgan" in str(error.value)


def test_underfit_warns_about_stale_gz_embeddings(root, caplog):
    np.savez(root / "embeddings" / "inpaint_dcgan__facenet.npz", keys=np.array(list(GZ_VECTORS)),
             paths=np.array([f"/x/{idx}/gz/gz_100.jpg" for idx in GZ_VECTORS]),
             sha256=np.array(["0" * 64] * 4), face_found=np.ones(4, dtype=bool),
             embeddings=np.array(list(GZ_VECTORS.values()), dtype=np.float32),
             protocol=np.array("facenet"), source=np.array("inpaint_dcgan"))

    with caplog.at_level(logging.WARNING):
        run(root)

    assert "4 G(z) embedding(s)" in caplog.text
    assert "final gz_200.jpg" in caplog.text


def test_underfit_rejects_test_image_in_train(root):
    write_embeddings(root / "embeddings", "train", "facenet", {**TRAIN_VECTORS, "a.jpg": [1, 0, 0]})

    with pytest.raises(ValueError, match="test image"):
        run(root)


def test_underfit_cli_all_models(root):
    completed = subprocess.run(
        [sys.executable, str(REPO / "underfit.py"), "--root", str(root), "--model", "all",
         "--k", "3", "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=120)

    assert completed.returncode == 0, completed.stderr
    assert "dcgan" in completed.stdout
    assert f"{(1.0 - SQRT_HALF_DISTANCE) / 3:.4f}" in completed.stdout


def test_underfit_cli_missing_embeddings_exit_2(root):
    (root / "embeddings" / "inpaint_dcgan__facenet.npz").unlink()

    completed = subprocess.run(
        [sys.executable, str(REPO / "underfit.py"), "--root", str(root), "--model", "dcgan",
         "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=120)

    assert completed.returncode == 2
    assert "--src inpaint --gan dcgan" in completed.stderr


# --- identities: the person-disjoint split and the same-person check --------------------------

# 12 images of 5 persons: P1 has 1 image, P2 2, P3 3, P4 4 and P5 2.
IDENTITY_OF = {f"{i:06d}.jpg": person for i, person in enumerate(
    ["P1", "P2", "P2", "P3", "P3", "P3", "P4", "P4", "P4", "P4", "P5", "P5"])}


def write_identity_file(path: Path, identities: dict) -> Path:
    path.write_text("".join(f"{name} {person}\n" for name, person in identities.items()))
    return path


def test_read_identities_parses_celeba_lines(tmp_path):
    path = tmp_path / "identity_CelebA.txt"
    path.write_text("000001.jpg 2880\n000002.jpg 2937\n\n000003.jpg 2880\n")

    assert read_identities(path) == {"000001.jpg": "2880", "000002.jpg": "2937", "000003.jpg": "2880"}


@pytest.mark.parametrize("text, message", [
    ("000001.jpg 2880 extra\n", "line 1"),
    ("000001.jpg 1\n000001.jpg 2\n", "line 2"),
    ("\n\n", "no '<file name> <identity>'"),
])
def test_read_identities_rejects_bad_files(tmp_path, text, message):
    path = tmp_path / "identities.txt"
    path.write_text(text)

    with pytest.raises(ValueError, match=message):
        read_identities(path)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("n_test", [1, 3, 5, 8])
def test_identity_split_exact_and_disjoint(seed, n_test):
    names = sorted(IDENTITY_OF)

    train, test, persons = choose_test_identities(names, n_test, seed, IDENTITY_OF)

    assert len(test) == n_test
    assert sorted(train + test) == names
    test_persons = {IDENTITY_OF[name] for name in test}
    train_persons = {IDENTITY_OF[name] for name in train}
    assert test_persons == set(persons)
    assert not test_persons & train_persons
    for person in persons:
        assert {name for name in names if IDENTITY_OF[name] == person} <= set(test)


def test_identity_split_reproducible_with_seed():
    names = sorted(IDENTITY_OF)
    draws = {seed: choose_test_identities(names, 4, seed, IDENTITY_OF)[1] for seed in range(10)}

    assert choose_test_identities(names, 4, 3, IDENTITY_OF)[1] == draws[3]
    assert len({tuple(test) for test in draws.values()}) > 1


def test_identity_split_rejects_unknown_images():
    identities = {name: person for name, person in IDENTITY_OF.items() if name != "000004.jpg"}

    with pytest.raises(SplitError, match="000004.jpg"):
        choose_test_identities(sorted(IDENTITY_OF), 3, 0, identities)


def test_identity_split_impossible_size_raises():
    # Two persons with 3 images each: 4 test images cannot be whole persons.
    identities = {f"{i}.jpg": "A" if i < 3 else "B" for i in range(6)}

    with pytest.raises(SplitError, match="exactly 4 images"):
        choose_test_identities(sorted(identities), 4, 0, identities)


def test_identity_split_manifest_and_rerun(image_folder, tmp_path):
    identity_file = write_identity_file(tmp_path / "identities.txt", IDENTITY_OF)

    result = split_dataset(image_folder, tmp_path / "s", tmp_path / "s" / "test", 5, seed=2,
                           progress=False, identity_file=identity_file)
    again = split_dataset(image_folder, tmp_path / "s", tmp_path / "s" / "test", 5, seed=2,
                          progress=False, identity_file=identity_file)

    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["split_by"] == "identity"
    assert manifest["n_test_identities"] == len(manifest["test_identities"])
    assert {IDENTITY_OF[name] for name in result.test} == set(manifest["test_identities"])
    assert not {IDENTITY_OF[name] for name in result.train} & set(manifest["test_identities"])
    assert again.reused
    assert again.test == result.test
    with pytest.raises(SplitError, match="identity_file_sha256"):
        split_dataset(image_folder, tmp_path / "s", tmp_path / "s" / "test", 5, seed=2, progress=False)


def test_identity_split_cli(image_folder, tmp_path):
    identity_file = write_identity_file(tmp_path / "identities.txt", IDENTITY_OF)

    completed = subprocess.run(
        [sys.executable, str(REPO / "split_train_test.py"), "--data", str(image_folder),
         "--root", str(tmp_path / "exp"), "--n_test", "4", "--split-by-identity", str(identity_file),
         "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=120)

    assert completed.returncode == 0, completed.stderr
    test = (tmp_path / "exp" / "split" / "test.txt").read_text().split()
    train = (tmp_path / "exp" / "split" / "train.txt").read_text().split()
    assert len(test) == 4
    assert not {IDENTITY_OF[name] for name in test} & {IDENTITY_OF[name] for name in train}


# Test image -> person; d.jpg is missing, so its row has no identity.
# The nearest training faces (see GZ_VECTORS) are t0, t1 and t1.
UNDERFIT_IDENTITIES = {"a.jpg": "P1", "t0.jpg": "P1", "b.jpg": "P2", "t1.jpg": "P3", "c.jpg": "P3",
                       "t2.jpg": "P4", "t3.jpg": "P1"}


def test_underfit_same_identity_columns(root, tmp_path):
    identity_file = write_identity_file(tmp_path / "identities.txt", UNDERFIT_IDENTITIES)

    result = run(root, identities=str(identity_file))
    table = pd.read_csv(root / "underfit" / "dcgan" / "underfit.csv", dtype={"same_identity": str})

    assert list(table["test_identity"].fillna("")) == ["P1", "P2", "P3", ""]
    assert list(table["train_identity_1"].fillna("")) == ["P1", "P3", "P3", ""]
    assert list(table["same_identity"].fillna("")) == ["True", "False", "True", ""]
    assert list(table["train_images_same_identity"]) == [2, 0, 1, -1]
    assert result.same_identity_rate == pytest.approx(2 / 3)
    assert result.n_identity_known == 3


def test_underfit_identity_file_changes_inputs(root, tmp_path):
    run(root)
    identity_file = write_identity_file(tmp_path / "identities.txt", UNDERFIT_IDENTITIES)

    with pytest.raises(FileExistsError, match="identity_file_sha256"):
        run(root, identities=str(identity_file))


def test_underfit_cli_prints_same_identity_rate(root, tmp_path):
    identity_file = write_identity_file(tmp_path / "identities.txt", UNDERFIT_IDENTITIES)

    completed = subprocess.run(
        [sys.executable, str(REPO / "underfit.py"), "--root", str(root), "--model", "dcgan",
         "--k", "3", "--identities", str(identity_file), "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=120)

    assert completed.returncode == 0, completed.stderr
    assert "66.7%" in completed.stdout
    assert "same person" in completed.stdout


def test_underfit_rerun_in_moved_root_skips(root, tmp_path):
    import shutil

    run(root)
    moved = tmp_path / "moved"
    shutil.copytree(root, moved)
    again = run(moved)
    assert again.already_done


def test_underfit_rerun_accepts_absolute_completions_record(root):
    # Records written before the path was dropped from the inputs stored it absolute.
    run(root)
    record_path = root / "underfit" / "dcgan" / "inputs.json"
    record = json.loads(record_path.read_text())
    record["completions"] = str((root / "completions_stochastic_center" / "dcgan" / "test").resolve())
    record_path.write_text(json.dumps(record))
    assert run(root).already_done


def test_differences_name_only_changed_leaves():
    from study.provenance import describe_differences

    old_hash, new_hash = "a" * 64, "b" * 64
    earlier = {"k": 1, "embeddings": {"test": {"sha256": "c" * 64}, "inpaint": {"sha256": old_hash}}}
    now = {"k": 2, "embeddings": {"test": {"sha256": "c" * 64}, "inpaint": {"sha256": new_hash}}}

    lines = describe_differences(earlier, now)

    assert lines == ["embeddings/inpaint/sha256: earlier 'aaaaaaaaaaaa...', now 'bbbbbbbbbbbb...'",
                     "k: earlier 1, now 2"]
    assert describe_differences(earlier, earlier) == []
