"""Inpainting (paper Sec. 4.5): the masked image's latent E(x ⊙ (1 − m)) and the mask m,
concatenated to z_t; trained on random rectangular holes (`spatial.random_masks`)."""

import torch

from latentdiff.conditioning import Cond
from latentdiff.conditioning.spatial import SpatialConditioner, masked_image_concat, random_masks
from latentdiff.data import ImageData, to_model_range


class InpaintingConditioner(SpatialConditioner):
    """(masked latent (B, c, h, w), mask (B, 1, H, W)) → Cond(concat (B, c + 1, h, w))."""

    kind = "inpaint"

    @property
    def inpaints(self) -> bool:
        return True

    def spatial(self, latent_size: tuple[int, int], *, masked_latent: torch.Tensor,
                mask: torch.Tensor) -> Cond:
        return Cond(concat=masked_image_concat(self.config, masked_latent, mask))

    def training_spatial(self, data: ImageData, index: torch.Tensor,
                         generator: torch.Generator, codec,
                         latent_size: tuple[int, int]) -> Cond:
        images = to_model_range(data.images[index])
        masks = random_masks(len(index), images.shape[-1], generator)
        device = next(codec.autoencoder.parameters()).device
        with torch.no_grad():
            masked_latent = codec.encode((images * (1 - masks)).to(device)).cpu()
        return self.spatial(latent_size, masked_latent=masked_latent, mask=masks)
