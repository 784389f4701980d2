"""Rebuild models from latentdiff checkpoints (config from the metadata, weights from the tensors)."""

from pathlib import Path

import torch

from latentdiff.autoencoder import Autoencoder, LatentCodec, LatentStats, build_autoencoder
from latentdiff.checkpoints.io import KIND, load_weights, read_metadata, read_tensors, require_kind
from latentdiff.config import AutoencoderConfig, DiffusionConfig, UNetConfig, from_dict
from latentdiff.errors import UserError
from latentdiff.ldm import LatentDiffusion
from latentdiff.noise import NoiseSchedule
from latentdiff.unet import UNetModel

AUTOENCODER, LATENT_DIFFUSION = "autoencoder", "latent_diffusion"


def load_autoencoder(path: str | Path, device: torch.device | str = "cpu") -> Autoencoder:
    """The first stage of an autoencoder checkpoint, or the one inside a latent-diffusion checkpoint (eval mode)."""
    metadata = read_metadata(path)
    if metadata.get(KIND) not in (AUTOENCODER, LATENT_DIFFUSION):
        require_kind(path, AUTOENCODER, "train one with `latentdiff train-autoencoder CONFIG`")
    autoencoder = build_autoencoder(from_dict(AutoencoderConfig, metadata["autoencoder_config"]))
    load_weights(autoencoder, read_tensors(path, "autoencoder."), str(path))
    return autoencoder.eval().requires_grad_(False).to(device)


def load_latent_diffusion(path: str | Path, device: torch.device | str = "cpu",
                          use_ema: bool = True) -> LatentDiffusion:
    """The whole system of a `latentdiff train` checkpoint, with the EMA weights unless use_ema=False."""
    metadata = require_kind(path, LATENT_DIFFUSION, "`latentdiff sample` needs a checkpoint written by `latentdiff "
                                                    "train`")
    unet = UNetModel(from_dict(UNetConfig, metadata["unet_config"]))
    prefix = "unet_ema." if use_ema else "unet."
    tensors = read_tensors(path, prefix)
    if not tensors:
        raise UserError(f"{path} holds no {prefix}* weights; pass use_ema={not use_ema}")
    load_weights(unet, tensors, str(path))
    diffusion = from_dict(DiffusionConfig, metadata["diffusion_config"])
    codec = LatentCodec(load_autoencoder(path), LatentStats(**metadata["latent_stats"]))
    return LatentDiffusion(unet=unet.eval().requires_grad_(False).to(device), codec=codec.to(device),
                           schedule=NoiseSchedule(diffusion.schedule), prediction=diffusion.prediction,
                           image_size=int(metadata["image_size"]), class_names=tuple(metadata.get("class_names", ())))
