"""Frido's feature pyramid of latents (`autoencoder/pyramid.py`): the projection, the structured
noise, the level views, and KL / VQ autoencoders whose latents keep the pyramid."""

import pytest
import torch

from latentdiff.autoencoder import build_autoencoder
from latentdiff.autoencoder.pyramid import (block_sizes, from_levels, levels, project,
                                            pyramid_noise)
from latentdiff.config import AutoencoderConfig
from latentdiff.errors import UserError


def _is_pyramid(z: torch.Tensor, num_levels: int) -> bool:
    return torch.allclose(project(z, num_levels), z, atol=1e-6)


@pytest.mark.parametrize("num_levels", [1, 2, 3])
def test_the_projection_is_idempotent_and_the_levels_round_trip(num_levels):
    z = torch.randn(2, 3 * num_levels, 8, 8)
    p = project(z, num_levels)
    assert _is_pyramid(p, num_levels) and torch.allclose(project(p, num_levels), p)
    parts = levels(p, num_levels)
    assert [x.shape[-1] for x in parts] == [8 // k for k in block_sizes(num_levels)]
    assert torch.allclose(from_levels(parts), p)
    # orthogonal: the residual is orthogonal to every structured latent
    assert abs(float(((z - p) * project(torch.randn_like(z), num_levels)).sum())) < 1e-3


def test_pyramid_noise_is_standard_normal_and_structured():
    n = pyramid_noise(torch.randn(4000, 6, 4, 4, generator=torch.Generator().manual_seed(0)), 3)
    assert _is_pyramid(n, 3)
    for part in levels(n, 3):  # each level's values: one N(0, 1) draw per block
        assert abs(part.mean()) < 0.02 and abs(part.var() - 1) < 0.03


@pytest.mark.parametrize("regularizer", ["kl", "vq"])
def test_pyramid_autoencoders_encode_samples_and_codes_with_the_structure(regularizer):
    cfg = AutoencoderConfig(in_channels=1, base_channels=32, channel_mult=(1, 1), num_res_blocks=1,
                            latent_channels=4, resolution=16, regularizer=regularizer,
                            codebook_size=16, pyramid_levels=2)
    ae = build_autoencoder(cfg).eval()
    x = torch.rand(3, 1, 16, 16) * 2 - 1
    posterior = ae.encode(x)
    assert posterior.mean.shape == (3, 4, 8, 8) and _is_pyramid(posterior.mean, 2)
    assert _is_pyramid(posterior.sample(torch.randn(3, 4, 8, 8)), 2)
    reconstruction, reg = ae(x)
    assert reconstruction.shape == x.shape
    if regularizer == "vq":
        assert ae.quantize.embedding.weight.shape == (16, 2)  # c/L-dimensional codes
        assert reg.indices.shape == (3, 16, 8) and _is_pyramid(reg.z_q, 2)
        # the coarse level's four positions of a block share one code
        coarse = reg.indices[:, :8]
        assert torch.equal(coarse[:, 0::2, 0::2], coarse[:, 1::2, 1::2])


def test_pyramid_levels_must_divide_the_latent_channels():
    with pytest.raises(UserError, match="pyramid_levels=3"):
        AutoencoderConfig(latent_channels=4, pyramid_levels=3)


def test_a_pyramid_vq_autoencoder_trains_with_code_restarts(tmp_path):
    from latentdiff.checkpoints.models import load_autoencoder
    from latentdiff.train.autoencoder import train_autoencoder
    from conftest import tiny_autoencoder_config

    path = train_autoencoder(tiny_autoencoder_config(
        tmp_path, "model.regularizer=vq", "model.codebook_size=16", "model.latent_channels=4",
        "model.pyramid_levels=2", "loss.restart_unused_after=1", "train.max_steps=3"))
    ae = load_autoencoder(path)
    assert ae.config.pyramid_levels == 2
    assert _is_pyramid(ae.encode(torch.zeros(1, 1, 16, 16)).mean, 2)
