"""Named sets of defaults: ``paper`` (the study's sizes, for GPUs) and ``cpu``.

A preset only fills options the user did not give; any flag overrides it, and
each stage saves the resolved values with its outputs.
"""

from __future__ import annotations

import argparse

PRESETS: dict[str, dict[str, dict]] = {
    "paper": {
        "split": {"n_test": 1000},
        "train": {"batch_size": 128, "epochs": 20, "max_steps": 0, "gf_dim": 64, "df_dim": 64,
                  "z_dim": 100, "ckpt_step": 500, "sample_count": 64},
        "complete": {"iterations": 1500, "batch_size": 64, "save_every": 100},
        "embed": {"batch_size": 64},
    },
    # Sized so the whole two-GAN experiment runs in well under 30 minutes on
    # a 2-core CPU: networks at 1/4 width, 12 epochs of batch 64, a 100-image
    # test set and shorter inpainting. As in the study, epochs count
    # discriminator batches, so a model with 5 critic steps makes a fifth as
    # many generator steps.
    "cpu": {
        "split": {"n_test": 100},
        "train": {"batch_size": 64, "epochs": 12, "max_steps": 0, "gf_dim": 16, "df_dim": 16,
                  "z_dim": 100, "ckpt_step": 200, "sample_count": 64},
        # After 12 epochs the GANs without batch norm drew one image for every
        # z, and WGAN (220 generator steps) drew noise. In runs trained on,
        # consensus optimization drew varied faces from about step 2,000,
        # DRAGAN from about 2,400 and WGAN face-shaped blobs from about 800
        # (README.md, "The GAN zoo"). DRAGAN's 36 epochs leave a small margin.
        "train_by_model": {"dcgan-cons": {"epochs": 30}, "dragan": {"epochs": 36},
                           "wgan": {"epochs": 48}},
        "complete": {"iterations": 600, "batch_size": 100, "save_every": 100},
        "embed": {"batch_size": 64},
    },
    # Seconds-long runs on a few dozen images, for the end-to-end test; the
    # numbers it produces mean nothing.
    "smoke": {
        "split": {"n_test": 6},
        "train": {"batch_size": 8, "epochs": 0, "max_steps": 6, "gf_dim": 4, "df_dim": 4,
                  "z_dim": 100, "ckpt_step": 3, "sample_count": 16},
        "complete": {"iterations": 10, "batch_size": 4, "save_every": 5},
        "embed": {"batch_size": 16},
    },
}


def add_preset_argument(parser: argparse.ArgumentParser, default: str = "paper") -> None:
    parser.add_argument("--preset", choices=sorted(PRESETS), default=default,
                        help=f"named set of defaults: 'paper' (the study's sizes, for GPUs) or "
                             f"'cpu' (small, for a laptop or CI); flags override it "
                             f"(default: {default})")


def _model_values(preset: str, stage: str, key: str) -> str:
    by_model = PRESETS[preset].get(f"{stage}_by_model", {})
    changed = [f"{model}: {values[key]}" for model, values in sorted(by_model.items()) if key in values]
    return f" ({', '.join(changed)})" if changed else ""


def preset_help(stage: str, key: str) -> str:
    """Return ``' (preset cpu: X (model: Y), paper: Z, ...)'`` for an option's help text."""
    values = ", ".join(f"{name}: {PRESETS[name][stage][key]}{_model_values(name, stage, key)}"
                       for name in sorted(PRESETS))
    return f" (preset {values})"


def preset_values(preset: str, stage: str, model: str | None = None) -> dict:
    """Return the defaults of ``stage`` in ``preset``, with ``model``'s own values applied."""
    values = dict(PRESETS[preset][stage])
    if model is not None:
        values.update(PRESETS[preset].get(f"{stage}_by_model", {}).get(model, {}))
    return values


def apply_preset(args: argparse.Namespace, stage: str, model: str | None = None) -> argparse.Namespace:
    """Fill every option of ``stage`` that is still None from ``args.preset``.

    A preset may give one model its own values for a stage under the key
    ``<stage>_by_model``, and ``model`` selects them.
    """
    for key, value in preset_values(args.preset, stage, model).items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    return args
