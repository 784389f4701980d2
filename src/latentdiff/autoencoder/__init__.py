"""Perceptual compression (first stage): encoder/decoder, KL posterior, losses, the pixel↔latent codec."""

from latentdiff.autoencoder.codec import LatentCodec, measure_scale_factor
from latentdiff.autoencoder.kl import AutoencoderKL, DiagonalGaussian

__all__ = ["AutoencoderKL", "DiagonalGaussian", "LatentCodec", "measure_scale_factor"]
