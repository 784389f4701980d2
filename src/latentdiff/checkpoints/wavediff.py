"""WaveDiff checkpoints (`latentdiff train-wavediff`): the generator with its EMA copy, the
discriminator, the autoencoder, and the configs that rebuild the system."""

from pathlib import Path

import torch

from latentdiff.autoencoder import LatentCodec, LatentStats
from latentdiff.checkpoints.io import KIND, load_weights, read_tensors, require_kind
from latentdiff.checkpoints.models import WAVEDIFF, load_autoencoder
from latentdiff.config import from_dict, to_dict
from latentdiff.config_systems import WaveletGeneratorConfig
from latentdiff.errors import UserError
from latentdiff.gan_chain import GANChainSchedule
from latentdiff.wavediff import WaveDiff, WaveletGenerator


def wavediff_metadata(system: WaveDiff) -> dict:
    """What rebuilds `system` from its checkpoint."""
    return {KIND: WAVEDIFF, "generator_config": to_dict(system.generator.config),
            "chain": system.schedule.describe(), "latent_stats": system.codec.stats.to_dict(),
            "autoencoder_config": to_dict(system.codec.autoencoder.config),
            "image_size": system.image_size}


def load_wavediff(path: str | Path, device: torch.device | str = "cpu",
                  use_ema: bool = True) -> WaveDiff:
    """The system of a `latentdiff train-wavediff` checkpoint, with the generator's EMA weights
    unless use_ema=False."""
    metadata = require_kind(path, WAVEDIFF, "train one with `latentdiff train-wavediff CONFIG`")
    autoencoder = load_autoencoder(path, device)
    generator = WaveletGenerator(autoencoder.config.latent_channels,
                                 from_dict(WaveletGeneratorConfig, metadata["generator_config"]))
    prefix = "generator_ema." if use_ema else "generator."
    tensors = read_tensors(path, prefix)
    if not tensors:
        raise UserError(f"{path} holds no {prefix}* weights; pass use_ema={not use_ema}")
    load_weights(generator, tensors, str(path))
    chain = metadata["chain"]
    schedule = GANChainSchedule(int(chain["num_timesteps"]), float(chain["beta_min"]),
                                float(chain["beta_max"]))
    codec = LatentCodec(autoencoder, LatentStats(**metadata["latent_stats"]))
    return WaveDiff(generator.eval().requires_grad_(False).to(device), codec.to(device), schedule,
                    int(metadata["image_size"]))
