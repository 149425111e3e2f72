"""The training loop: checkpoints, resume, samples, logs, divergence and bad names."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO
from models import checkpoint
from models import get_spec
from models.gan import GAN, Sizes
from study.images import Preprocessing, list_image_files
from study.tfrecords import convert
from study.training import (TrainConfig, TrainingDiverged, plan, sample_spread, total_steps,
                            train)


@pytest.fixture
def records(image_folder, tmp_path):
    paths, _ = list_image_files(image_folder)
    out = tmp_path / "records"
    convert(paths, out, n_shards=2, prep=Preprocessing(size=16, crop_fraction=1.0), progress=False)
    return out


def tiny_config(records, folder, **overrides):
    settings = dict(model="dcgan", tfrecords=str(records), checkpoint_dir=str(folder), batch_size=4,
                    epochs=0, max_steps=6, z_dim=8, gf_dim=2, df_dim=2, ckpt_step=3, log_every=2,
                    sample_count=4, seed=1, progress=False)
    settings.update(overrides)
    return TrainConfig(**settings)


def test_total_steps_counts_critic_batches():
    config = TrainConfig(model="wgan-gp", tfrecords="x", checkpoint_dir="y", batch_size=128, epochs=20)
    assert total_steps(config, 202599 - 1000, n_critic=5) == 20 * (201599 // 128) // 5
    assert total_steps(config, 202599 - 1000, n_critic=1) == 20 * (201599 // 128)


def test_sample_spread_by_hand():
    black, white = np.zeros((1, 2, 2, 3)), np.ones((1, 2, 2, 3))
    # Every pixel is 0 in one sample and 1 in the other: std 0.5 everywhere.
    assert sample_spread(np.concatenate([black, white])) == pytest.approx(0.5)
    assert sample_spread(np.concatenate([white, white, white])) == 0.0
    # Only one of four pixels differs (values -1 and 1, std 1): mean 0.25.
    pair = np.zeros((2, 2, 2, 1))
    pair[0, 0, 0, 0], pair[1, 0, 0, 0] = -1.0, 1.0
    assert sample_spread(pair) == pytest.approx(0.25)


def test_collapse_warning_compares_with_real_spread(caplog):
    from study.training import _warn_if_collapsed

    rng = np.random.default_rng(0)
    real = rng.uniform(-1, 1, (8, 4, 4, 3))
    one_image = np.repeat(real[:1], 8, axis=0) + rng.normal(0, 0.01, (8, 4, 4, 3))
    _warn_if_collapsed("dragan", 200, sample_spread(one_image), sample_spread(real))
    assert "dragan, step 200" in caplog.text
    assert "mode collapse" in caplog.text
    caplog.clear()
    _warn_if_collapsed("dragan", 400, sample_spread(real[::-1]), sample_spread(real))
    assert caplog.text == ""


def test_train_writes_checkpoints_samples_logs(records, tmp_path):
    folder = tmp_path / "ckpt"
    summary = train(tiny_config(records, folder))
    assert summary["steps"] == 6
    assert [p.name for p in checkpoint.list_checkpoints(folder)] == ["ckpt-00000003.npz", "ckpt-00000006.npz"]
    assert sorted(p.name for p in (folder / "samples").iterdir()) == ["step_00000003.png", "step_00000006.png"]
    with open(folder / "losses.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == [2, 4, 6]
    assert all(np.isfinite(float(r["grad_norm_real"])) for r in rows)
    # The last row's sample_std is the spread of the grid that the step-6 checkpoint draws.
    def factory(meta):
        return GAN(get_spec(meta["model"]),
                   Sizes(meta["z_dim"], meta["gf_dim"], meta["df_dim"], meta["image_size"]))
    gan, _ = checkpoint.load_for_inference(folder, factory)
    images = gan.sample(np.load(folder / "sample_z.npy"))
    assert float(rows[-1]["sample_std"]) == pytest.approx(float(images.std(axis=0).mean()), rel=1e-5)
    config = json.loads((folder / "config.json").read_text())
    assert config["model"] == "dcgan"
    assert config["steps"] == 6
    assert config["spec"]["label"] == "NSGAN"
    assert any((folder / "tensorboard").iterdir())


def test_resume_continues_from_latest(records, tmp_path):
    folder = tmp_path / "ckpt"
    train(tiny_config(records, folder, max_steps=3))
    first = checkpoint.latest(folder)
    summary = train(tiny_config(records, folder, max_steps=6))
    assert summary["trained_now"] == 3
    assert checkpoint.read_meta(checkpoint.latest(folder))["step"] == 6
    assert first.exists()  # the earlier checkpoint is within the kept three
    again = train(tiny_config(records, folder, max_steps=6))
    assert again["trained_now"] == 0


def test_other_settings_in_folder_is_an_error(records, tmp_path):
    folder = tmp_path / "ckpt"
    train(tiny_config(records, folder, max_steps=3))
    with pytest.raises(ValueError, match="gf_dim: existing 2, requested 4"):
        train(tiny_config(records, folder, gf_dim=4))
    summary = train(tiny_config(records, folder, gf_dim=4, renew=True))
    assert summary["trained_now"] == 6


def test_non_finite_loss_stops_and_keeps_checkpoint(records, tmp_path, monkeypatch):
    real_step = GAN.train_step
    calls = {"n": 0}

    def failing_step(self, real_group):
        calls["n"] += 1
        values = real_step(self, real_group)
        if calls["n"] == 5:
            values = dict(values, g_loss=tf.constant(float("nan")))
        return values

    monkeypatch.setattr(GAN, "train_step", failing_step)
    folder = tmp_path / "ckpt"
    with pytest.raises(TrainingDiverged, match=r"non-finite g_loss at step 5.*ckpt-00000003\.npz"):
        train(tiny_config(records, folder))
    assert [p.name for p in checkpoint.list_checkpoints(folder)] == ["ckpt-00000003.npz"]


def test_train_cli_unknown_model_lists_names():
    result = subprocess.run([sys.executable, str(REPO / "train.py"), "--model", "nosuch"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "nosuch" in result.stderr
    assert "dcgan" in result.stderr
    assert "wgan-gp" in result.stderr


def test_resume_refuses_rewritten_training_data(records, tmp_path, image_folder):
    folder = tmp_path / "ckpt"
    train(tiny_config(records, folder, max_steps=3))
    paths, _ = list_image_files(image_folder)
    convert(paths[:8], records, n_shards=2, prep=Preprocessing(size=16, crop_fraction=1.0),
            overwrite=True, progress=False)
    with pytest.raises(ValueError, match="training images"):
        train(tiny_config(records, folder, max_steps=6))
    with pytest.raises(ValueError, match="seed: existing 1, requested 2"):
        train(tiny_config(records, folder, seed=2))


def test_resume_without_recorded_data_hash(records, tmp_path, caplog):
    # A run from before the data hash was recorded resumes with a warning and gets the hash.
    folder = tmp_path / "ckpt"
    train(tiny_config(records, folder, max_steps=3))
    config_path = folder / "config.json"
    recorded = json.loads(config_path.read_text())
    expected_hash = recorded.pop("training_data_sha256")
    config_path.write_text(json.dumps(recorded))
    summary = train(tiny_config(records, folder, max_steps=6))
    assert summary["trained_now"] == 3
    assert "cannot be checked" in caplog.text
    assert json.loads(config_path.read_text())["training_data_sha256"] == expected_hash

def _snapshot(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_mtime_ns) for p in folder.rglob("*"))


def test_plan_checks_without_writing(records, tmp_path):
    folder = tmp_path / "ckpt"
    fresh = plan(tiny_config(records, folder))
    assert not folder.exists()
    assert fresh["steps"] == 6
    assert fresh["start_step"] == 0
    assert fresh["n_train_images"] == 12

    train(tiny_config(records, folder, max_steps=3))
    before = _snapshot(folder)
    resumed = plan(tiny_config(records, folder))
    assert resumed["start_step"] == 3
    assert resumed["resume_from"].endswith("ckpt-00000003.npz")
    with pytest.raises(ValueError, match="gf_dim: existing 2, requested 4"):
        plan(tiny_config(records, folder, gf_dim=4))
    with pytest.raises(ValueError, match="batch size 64 is larger than the 12"):
        plan(tiny_config(records, tmp_path / "other", batch_size=64))
    assert plan(tiny_config(records, folder, renew=True))["start_step"] == 0
    assert _snapshot(folder) == before


def test_train_dry_run_cli_reports_missing_records(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "train.py"), "--model", "dcgan", "--root",
                             str(tmp_path / "exp"), "--preset", "smoke", "--dry-run"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "convert.py" in result.stderr
    assert str(tmp_path / "exp" / "tfrecords") in result.stderr
    assert not (tmp_path / "exp" / "checkpoints").exists()



def test_cpu_preset_lengthens_slow_models():
    import argparse

    from study import presets

    def resolved(model, **flags):
        args = argparse.Namespace(**{"preset": "cpu", "epochs": None, "batch_size": None, **flags})
        return presets.apply_preset(args, "train", model=model)

    assert resolved("dcgan").epochs == 12
    assert resolved("dcgan-cons").epochs == 30
    assert resolved("dragan").epochs == 36
    assert resolved("wgan").epochs == 48
    assert resolved("dcgan-cons").batch_size == 64  # the preset's other values still apply
    assert resolved("dcgan-cons", epochs=5).epochs == 5  # a flag wins over the preset
    assert presets.apply_preset(argparse.Namespace(preset="paper", epochs=None), "train",
                                model="dcgan-cons").epochs == 20
    assert "cpu: 12 (dcgan-cons: 30, dragan: 36, wgan: 48)" in presets.preset_help("train", "epochs")


def test_per_model_preset_names_models_and_options():
    from models import model_names
    from study.presets import PRESETS

    for preset, stages in PRESETS.items():
        for key, by_model in stages.items():
            if not key.endswith("_by_model"):
                continue
            stage = key[: -len("_by_model")]
            assert set(by_model) <= set(model_names()), (preset, key)
            for values in by_model.values():
                assert set(values) <= set(stages[stage]), (preset, key, values)
