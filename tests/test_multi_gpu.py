"""Data-parallel training (train.py --gpus N) on two logical CPU devices.

TensorFlow fixes its device list when it initializes, so the two-replica
runs happen in one child process that splits the CPU into two logical
devices before anything else touches TensorFlow. The child writes every
variable after one training step on two replicas and on one device, and
the tests here compare them. It also runs the training loop for a few
steps on two replicas and on one device, and resumes the two-replica
checkpoint on one device. The comparisons use plain SGD in place of the
study's optimizers, for the reason given in CHILD. One step with the
study's optimizers checks that those run on two replicas too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import REPO

# What each model adds to the comparison:
#   dcgan    batch norm in both networks
#   wgan-gp  gradient penalty and 5 critic steps
#   dragan   noise scaled by the spread of the whole batch
#   wgan     weight clipping between the critic steps
STEP_MODELS = ("dcgan", "wgan-gp", "dragan", "wgan")
REJECTED_MODELS = ("dcgan-gp", "dragan_bn", "dcgan-cons")
GLOBAL_BATCH = 8

# The comparisons train with SGD at learning rate 0.01 (see CHILD), so a
# weight moves by 0.01 times its gradient. A wrong gradient, such as one
# taken from half the batch or with unsynchronized batch norm, moves weights
# by 1e-4 and more. Float rounding differences measured below 1e-7 (TF 2.21, x86-64).
WEIGHT_RTOL = 1e-4
WEIGHT_ATOL = 1e-6
LOSS_RTOL = 1e-4

CHILD = textwrap.dedent(f"""
    import json
    import sys

    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import keras
    import numpy as np

    import models.gan
    from models import get_spec
    from models.gan import GAN, Sizes, UnsupportedDistribution

    out_dir = sys.argv[1]
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    sizes = Sizes(z_dim=8, gf_dim=2, df_dim=4, image_size=16)
    report = {{"replicas": strategy.num_replicas_in_sync, "losses": {{}}, "rejected": {{}},
               "study_optimizers": {{}}}}


    def global_batch(spec):
        return tf.random.stateless_uniform([spec.n_critic, {GLOBAL_BATCH}, 16, 16, 3], seed=[4, 5],
                                           minval=-1.0, maxval=1.0)


    # One step with the study's optimizers (Adam, RMSProp) on two replicas.
    for name in {STEP_MODELS!r}:
        spec = get_spec(name)
        two = GAN(spec, sizes, seed=3, strategy=strategy)
        values = {{k: float(v) for k, v in two.train_step(global_batch(spec)).items()}}
        report["study_optimizers"][name] = {{
            "losses": values, "g_iterations": int(two.g_optimizer.iterations.numpy()),
            "d_iterations": int(two.d_optimizer.iterations.numpy())}}


    # Adam's first steps move a weight by about the learning rate times the
    # sign of its gradient, so a rounding difference in a gradient near zero
    # becomes a difference of the whole learning rate. With plain SGD the
    # update is the gradient times the learning rate, and a rounding
    # difference stays one, so the comparisons below use SGD.
    def sgd(settings):
        return keras.optimizers.SGD(learning_rate=0.01)


    models.gan.make_optimizer = sgd


    def state(gan):
        # Optimizer paths carry a per-instance counter (sgd, sgd_1, ...), so
        # variables are keyed by their group and position instead.
        groups = {{"G": gan.generator.weights, "D": gan.discriminator.weights,
                   "G_opt": gan.g_optimizer.variables, "D_opt": gan.d_optimizer.variables}}
        named = {{f"{{group}}/{{index:03d}}": np.asarray(var.numpy())
                  for group, variables in groups.items() for index, var in enumerate(variables)}}
        named["rng state"] = gan.rng.state.numpy()
        return named


    arrays = {{}}
    for name in {STEP_MODELS!r}:
        spec = get_spec(name)
        one = GAN(spec, sizes, seed=3)
        two = GAN(spec, sizes, seed=3, strategy=strategy)
        for label, gan in (("one", one), ("two", two)):
            for key, value in state(gan).items():
                arrays[f"{{name}}|initial|{{label}}|{{key}}"] = value
        real = global_batch(spec)
        report["losses"][name] = {{}}
        for label, gan in (("one", one), ("two", two)):
            report["losses"][name][label] = {{k: float(v) for k, v in gan.train_step(real).items()}}
            for key, value in state(gan).items():
                arrays[f"{{name}}|step|{{label}}|{{key}}"] = value

    for name in {REJECTED_MODELS!r}:
        try:
            GAN(get_spec(name), sizes, seed=0, strategy=strategy)
            report["rejected"][name] = None
        except UnsupportedDistribution as exc:
            report["rejected"][name] = str(exc)

    # The training loop with two replicas, then resumed on one device.
    import study.training
    from models import checkpoint
    from study.training import TrainConfig, train

    study.training.make_strategy = lambda gpus: strategy if gpus > 1 else None
    settings = dict(model="dcgan", tfrecords=sys.argv[2], batch_size={GLOBAL_BATCH}, epochs=0,
                    max_steps=3, z_dim=8, gf_dim=2, df_dim=4, ckpt_step=3, log_every=1,
                    sample_count=4, seed=1, progress=False)
    for label, gpus in (("two", 2), ("one", 0)):
        folder = out_dir + "/train_" + label
        train(TrainConfig(checkpoint_dir=folder, gpus=gpus, **settings))
        with np.load(checkpoint.latest(folder)) as data:
            for key in data.files:
                if key != "__meta__":
                    arrays[f"train|{{label}}|{{key}}"] = data[key]
    resumed = train(TrainConfig(checkpoint_dir=out_dir + "/train_two", gpus=0,
                                **dict(settings, max_steps=4)))
    report["resumed"] = {{"trained_now": resumed["trained_now"], "steps": resumed["steps"]}}

    np.savez(out_dir + "/variables.npz", **arrays)
    with open(out_dir + "/report.json", "w") as handle:
        json.dump(report, handle)
""")


@pytest.fixture(scope="module")
def child_results(tmp_path_factory):
    from PIL import Image

    from conftest import synthetic_rgb
    from study.images import Preprocessing, list_image_files
    from study.tfrecords import convert

    out_dir = tmp_path_factory.mktemp("multi_gpu")
    faces = out_dir / "faces"
    faces.mkdir()
    for index in range(12):
        Image.fromarray(synthetic_rgb(index)).save(faces / f"{index:06d}.jpg", quality=95)
    paths, _ = list_image_files(faces)
    records = out_dir / "records"
    convert(paths, records, n_shards=2, prep=Preprocessing(size=16, crop_fraction=1.0), progress=False)

    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-c", CHILD, str(out_dir), str(records)], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads((out_dir / "report.json").read_text())
    with np.load(out_dir / "variables.npz") as data:
        arrays = {key: data[key] for key in data.files}
    return report, arrays


def _variables(arrays, model, when, label):
    prefix = f"{model}|{when}|{label}|"
    return {key[len(prefix):]: value for key, value in arrays.items() if key.startswith(prefix)}


def test_child_runs_two_replicas(child_results):
    report, _ = child_results
    assert report["replicas"] == 2


@pytest.mark.parametrize("model", STEP_MODELS)
def test_initial_variables_identical(child_results, model):
    _, arrays = child_results
    one = _variables(arrays, model, "initial", "one")
    two = _variables(arrays, model, "initial", "two")
    assert one.keys() == two.keys()
    for key in one:
        np.testing.assert_array_equal(two[key], one[key], err_msg=key)


@pytest.mark.parametrize("model", STEP_MODELS)
def test_two_replica_step_equals_one_device(child_results, model):
    _, arrays = child_results
    one = _variables(arrays, model, "step", "one")
    two = _variables(arrays, model, "step", "two")
    assert one.keys() == two.keys()
    initial = _variables(arrays, model, "initial", "one")
    moved = [key for key in one if not np.array_equal(one[key], initial[key])]
    assert len(moved) > len(one) // 2, "the step changed too few variables to compare"
    for key in one:
        np.testing.assert_allclose(two[key], one[key], rtol=WEIGHT_RTOL, atol=WEIGHT_ATOL, err_msg=key)


@pytest.mark.parametrize("model", STEP_MODELS)
def test_random_draws_match_one_device(child_results, model):
    _, arrays = child_results
    one = _variables(arrays, model, "step", "one")
    two = _variables(arrays, model, "step", "two")
    # The generator state advances by the draws made: equal states mean the
    # two-replica step drew the same number of values from the same stream.
    np.testing.assert_array_equal(two["rng state"], one["rng state"])


@pytest.mark.parametrize("model", STEP_MODELS)
def test_two_replica_losses_equal_one_device(child_results, model):
    report, _ = child_results
    one, two = report["losses"][model]["one"], report["losses"][model]["two"]
    assert one.keys() == two.keys()
    for key in one:
        assert two[key] == pytest.approx(one[key], rel=LOSS_RTOL, abs=1e-6), key


@pytest.mark.parametrize("model", STEP_MODELS)
def test_study_optimizers_step_on_two_replicas(child_results, model):
    from models import get_spec

    result = child_results[0]["study_optimizers"][model]
    assert result["g_iterations"] == 1
    assert result["d_iterations"] == get_spec(model).n_critic
    for key, value in result["losses"].items():
        assert np.isfinite(value), key


@pytest.mark.parametrize("model", REJECTED_MODELS)
def test_unsupported_models_rejected(child_results, model):
    report, _ = child_results
    message = report["rejected"][model]
    assert message is not None, f"{model} was accepted on two replicas"
    assert model in message and "--gpus 0 or 1" in message


def test_uneven_batch_rejected():
    from study.training import TrainConfig

    with pytest.raises(ValueError, match="--batch_size 10 does not split evenly across --gpus 4"):
        TrainConfig(model="dcgan", tfrecords="x", checkpoint_dir="y", batch_size=10, gpus=4)
    TrainConfig(model="dcgan", tfrecords="x", checkpoint_dir="y", batch_size=10, gpus=1)


def test_negative_gpus_rejected():
    from study.training import TrainConfig

    with pytest.raises(ValueError, match="--gpus must be 0 or more"):
        TrainConfig(model="dcgan", tfrecords="x", checkpoint_dir="y", gpus=-1)


def test_one_gpu_keeps_single_device_path():
    from study.training import make_strategy

    assert make_strategy(0) is None
    assert make_strategy(1) is None


def test_missing_gpus_named_in_error():
    import tensorflow as tf

    from study.training import make_strategy

    visible = len(tf.config.list_logical_devices("GPU"))
    with pytest.raises(ValueError, match=f"--gpus {visible + 2} requested, but TensorFlow sees {visible} GPU"):
        make_strategy(visible + 2)


def test_train_rejects_consensus_before_reading_data(tmp_path):
    from models.gan import UnsupportedDistribution
    from study.training import TrainConfig, train

    config = TrainConfig(model="dcgan-cons", tfrecords=str(tmp_path / "missing"),
                         checkpoint_dir=str(tmp_path / "ckpt"), batch_size=4, gpus=2)
    with pytest.raises(UnsupportedDistribution, match="consensus optimization"):
        train(config)
    assert not (tmp_path / "ckpt").exists()


def test_training_loop_on_two_replicas_equals_one_device(child_results):
    _, arrays = child_results
    two = {key[len("train|two|"):]: value for key, value in arrays.items() if key.startswith("train|two|")}
    one = {key[len("train|one|"):]: value for key, value in arrays.items() if key.startswith("train|one|")}
    assert two and one.keys() == two.keys()
    for key in one:
        # Three steps: rounding differences pass through two more updates.
        np.testing.assert_allclose(two[key], one[key], rtol=1e-3, atol=1e-5, err_msg=key)


def test_two_replica_checkpoint_resumes_on_one_device(child_results):
    report, _ = child_results
    assert report["resumed"] == {"trained_now": 1, "steps": 4}
