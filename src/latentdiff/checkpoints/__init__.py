"""Checkpoints: our format (`io.py`: safetensors, atomic, self-describing; `models.py`: model
rebuilding and export), other toolkits' formats (`interop/`), and `load_model`, which reads any of
them."""

from latentdiff.checkpoints.io import read_metadata, read_tensors, save_checkpoint
from latentdiff.checkpoints.load import load_model
from latentdiff.checkpoints.models import (AUTOENCODER, LATENT_DIFFUSION,
                                           load_autoencoder, load_latent_diffusion)

__all__ = ["AUTOENCODER", "LATENT_DIFFUSION", "load_autoencoder",
           "load_latent_diffusion", "load_model",
           "read_metadata", "read_tensors", "save_checkpoint"]
