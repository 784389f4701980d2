"""Perceptual compression (first stage): encoder/decoder, KL and VQ regularisers, losses, the
pixel↔latent codec."""

from latentdiff.autoencoder.codec import LatentCodec, LatentStats
from latentdiff.autoencoder.kl import AutoencoderKL, DiagonalGaussian
from latentdiff.autoencoder.pixel import PixelSpace, PointPosterior
from latentdiff.autoencoder.vq import AutoencoderVQ, Quantized, VectorQuantizer
from latentdiff.config import AutoencoderConfig

Autoencoder = AutoencoderKL | AutoencoderVQ | PixelSpace


def build_autoencoder(cfg: AutoencoderConfig) -> Autoencoder:
    """The autoencoder of `cfg.regularizer`: "kl", "vq", or "none" (pixel space, the identity)."""
    if cfg.regularizer == "none":
        return PixelSpace(cfg)
    return AutoencoderVQ(cfg) if cfg.regularizer == "vq" else AutoencoderKL(cfg)


__all__ = ["Autoencoder", "AutoencoderKL", "AutoencoderVQ", "DiagonalGaussian",
           "LatentCodec", "LatentStats",
           "PixelSpace", "PointPosterior", "Quantized", "VectorQuantizer", "build_autoencoder"]
