"""Shared by the web UI tests: a folder of tiny models of every kind."""

import shutil
from pathlib import Path

from conftest import tiny_autoencoder_config, tiny_ldm_config
from test_conditional_train import SHAPES, conditional_config

from latentdiff.train.autoencoder import train_autoencoder
from latentdiff.train.diffusion import train_latent_diffusion

KINDS = ("text", "superres", "layout", "semantic", "inpaint")


def tiny_models(folder: Path) -> dict[str, Path]:
    """2-step checkpoints of each kind on 16×16 shapes, and a class-conditional digits model, as
    folder/<kind>.safetensors."""
    folder.mkdir(parents=True, exist_ok=True)
    work = folder.parent / f"{folder.name}-runs"
    shapes_ae = train_autoencoder(tiny_autoencoder_config(work / "ae", *SHAPES,
                                                          "model.in_channels=3", "train.max_steps=2",
                                                          "train.checkpoint_every=2"))
    models = {}
    for kind in KINDS:
        checkpoint = train_latent_diffusion(conditional_config(work / kind, shapes_ae, kind,
                                                               "train.max_steps=2"))
        models[kind] = Path(shutil.copy(checkpoint, folder / f"{kind}.safetensors"))
    digits_ae = train_autoencoder(tiny_autoencoder_config(work / "ae-digits", "train.max_steps=2",
                                                          "train.checkpoint_every=2"))
    checkpoint = train_latent_diffusion(tiny_ldm_config(work / "digits", digits_ae,
                                                        "conditioning.drop_prob=0.2",
                                                        "unet.num_classes=11", "train.max_steps=2"))
    models["class"] = Path(shutil.copy(checkpoint, folder / "class.safetensors"))
    return models
