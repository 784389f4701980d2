"""Large images: convolutional encode/decode at any size divisible by f, and tiled encode/decode
that agrees with the untiled result away from the seams."""

import pytest
import torch

from conftest import tiny_autoencoder_config
from latentdiff.autoencoder.tiling import tile_starts, tiled_decode, tiled_encode, tiled_map
from latentdiff.checkpoints import load_autoencoder
from latentdiff.data import load_digits, to_model_range
from latentdiff.train.autoencoder import train_autoencoder


def test_tile_starts_cover_with_overlap():
    assert tile_starts(100, 32, 8) == [0, 24, 48, 68]
    assert tile_starts(20, 32, 8) == [0]


def test_blending_is_exact_for_pointwise_functions():
    x = torch.randn(1, 2, 70, 90)
    torch.testing.assert_close(tiled_map(lambda t: 3 * t, x, 32, 12, 1.0), 3 * x)


def _large_digit_canvas() -> torch.Tensor:
    """A 1×1×96×128 image tiled from 16×16 digits (the tiny autoencoder's training size)."""
    digits = to_model_range(load_digits(16).images[:48])  # (48, 1, 16, 16)
    return digits.view(6, 8, 16, 16).permute(0, 2, 1, 3).reshape(1, 1, 96, 128)


@pytest.fixture(scope="module")
def fitted_autoencoder(tmp_path_factory):
    """A tiny digits autoencoder trained long enough (60 steps) that its GroupNorm statistics mean
    something: an untrained one is dominated by them, and those are what differ between a tile and
    the whole image."""
    out = tmp_path_factory.mktemp("tiling")
    return load_autoencoder(train_autoencoder(tiny_autoencoder_config(out, "train.max_steps=60", "train.lr=3e-3",
                                                                      "train.checkpoint_every=60")))


def test_tiled_and_untiled_agree_away_from_seams(fitted_autoencoder):
    autoencoder = fitted_autoencoder
    x = _large_digit_canvas()
    with torch.no_grad():
        z_full = autoencoder.encode(x).mean  # convolutionally, at 48× the training area
        full = autoencoder.decode(z_full)
    z_tiled = tiled_encode(autoencoder, x, tile=64, overlap=32)
    tiled = tiled_decode(autoencoder, z_full, tile=32, overlap=16)
    assert z_tiled.shape == z_full.shape and tiled.shape == x.shape
    # inside the first tile, away from its seams
    centre = (slice(None), slice(None), slice(8, 16), slice(8, 16))
    assert (z_tiled - z_full)[centre].abs().mean() < 0.04 * z_full.abs().mean()
    tiling_error = (tiled - full).abs().mean()
    assert tiling_error < 0.05 * full.abs().mean()
    # far below the autoencoder's own reconstruction error
    assert tiling_error < 0.25 * (full - x).abs().mean()
