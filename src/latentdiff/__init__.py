"""latentdiff: latent diffusion models (Rombach et al., CVPR 2022) — train and run them.

data → autoencoder (codec) → latents → noise process + denoiser → sampler → decoder → image.
"""

from latentdiff.errors import UserError

__version__ = "0.1.0"
__all__ = ["UserError", "__version__"]
