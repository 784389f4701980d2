"""Shared fixtures: tiny configs (a few thousand to ~100k parameters) so the suite stays fast on 2
CPU cores."""

import os

import pytest
import torch

from latentdiff.config import (AutoencoderConfig, AutoencoderTrainConfig,
                               LatentDiffusionTrainConfig, load_config)

torch.set_num_threads(min(2, os.cpu_count() or 1))

TINY_AE = ["model.in_channels=1", "model.base_channels=32", "model.channel_mult=[1,1]",
           "model.num_res_blocks=1",
           "model.latent_channels=2", "model.resolution=16",
           "data.image_size=16", "data.holdout=200",
           "train.batch_size=8", "train.lr=1e-3", "train.log_every=1", "train.sample_every=0"]
TINY_UNET = ["unet.in_channels=2", "unet.out_channels=2", "unet.model_channels=32",
             "unet.channel_mult=[1,1]",
             "unet.num_res_blocks=1", "unet.attention_resolutions=[2]", "unet.head_channels=32",
             "unet.num_classes=10", "data.image_size=16", "data.holdout=200",
             "train.batch_size=8", "train.lr=1e-3",
             "train.log_every=1", "train.sample_every=0", "preview.steps=2",
             "preview.per_class=1", "ema_decay=0.9"]


def tiny_autoencoder_config(out_dir, *extra: str) -> AutoencoderTrainConfig:
    return load_config(AutoencoderTrainConfig, None, [*TINY_AE, f"train.out_dir={out_dir}", *extra])


def tiny_ldm_config(out_dir, autoencoder, *extra: str) -> LatentDiffusionTrainConfig:
    return load_config(LatentDiffusionTrainConfig, None,
                       [*TINY_UNET, f"train.out_dir={out_dir}",
                        f"autoencoder={autoencoder}", *extra])


@pytest.fixture(scope="session")
def tiny_ae_cfg() -> AutoencoderConfig:
    return AutoencoderConfig(in_channels=1, base_channels=32, channel_mult=(1, 1), num_res_blocks=1,
                             latent_channels=2, resolution=16)


@pytest.fixture(scope="session")
def trained_autoencoder(tmp_path_factory):
    """A tiny digits autoencoder checkpoint (f = 2, 16×16 → 2×8×8), trained for a few steps."""
    from latentdiff.train.autoencoder import train_autoencoder

    out = tmp_path_factory.mktemp("ae")
    return train_autoencoder(tiny_autoencoder_config(out, "train.max_steps=3",
                                                     "train.checkpoint_every=3"))


@pytest.fixture(scope="session")
def rgb_autoencoder(tmp_path_factory):
    """A tiny RGB autoencoder checkpoint (f = 2, 16×16 → 2×8×8) after one step on shapes."""
    from latentdiff.train.autoencoder import train_autoencoder

    out = tmp_path_factory.mktemp("rgb")
    return train_autoencoder(tiny_autoencoder_config(out, "data.dataset=shapes", "data.holdout=50",
                                                     "model.in_channels=3", "train.max_steps=1",
                                                     "train.checkpoint_every=1"))


@pytest.fixture(scope="session")
def teacher(tmp_path_factory):
    """A tiny text-to-image teacher on 16×16 shapes with condition dropout (guidance works), for the
    distillation tests."""
    from latentdiff.train.autoencoder import train_autoencoder
    from latentdiff.train.diffusion import train_latent_diffusion

    shapes = ["data.dataset=shapes", "data.holdout=100"]
    text = ["unet.context_dim=32", "conditioning.text.width=32", "conditioning.text.depth=1",
            "conditioning.text.num_heads=2", "conditioning.text.max_length=16",
            "conditioning.text.vocab_size=64"]
    out = tmp_path_factory.mktemp("teacher")
    ae = train_autoencoder(tiny_autoencoder_config(out / "ae", *shapes, "model.in_channels=3",
                                                   "train.max_steps=2",
                                                   "train.checkpoint_every=2"))
    return train_latent_diffusion(tiny_ldm_config(out / "ldm", ae, *shapes,
                                                  "unet.num_classes=null",
                                                  "conditioning.kind=text",
                                                  "conditioning.drop_prob=0.2", *text,
                                                  "train.max_steps=20"))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Evaluator caches go to one temporary folder per session, never to the user's ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))
