"""Checkpoint I/O (safetensors, atomic, self-describing) and model rebuilding."""

from latentdiff.checkpoints.io import read_metadata, read_tensors, save_checkpoint
from latentdiff.checkpoints.models import AUTOENCODER, LATENT_DIFFUSION, load_autoencoder, load_latent_diffusion

__all__ = ["AUTOENCODER", "LATENT_DIFFUSION", "load_autoencoder", "load_latent_diffusion", "read_metadata",
           "read_tensors", "save_checkpoint"]
