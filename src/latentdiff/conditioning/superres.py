"""Super-resolution (paper Sec. 4.4): the low-resolution image, bicubic-resized to the latent size,
concatenated to z_t; trained on images degraded by bicubic downsampling or a BSR-like chain
(`spatial.degrade_realistic`)."""

import torch

from latentdiff.conditioning import Cond
from latentdiff.conditioning.spatial import (SpatialConditioner, degrade_realistic,
                                             downsample_bicubic, lowres_concat)
from latentdiff.data import ImageData, to_model_range


class SuperResConditioner(SpatialConditioner):
    """low-resolution images (B, C, H/f_sr, W/f_sr) in [-1, 1] → Cond(concat (B, C, h, w)); scored
    against the originals (`restores`)."""

    kind = "superres"

    @property
    def restores(self) -> bool:
        return True

    def concat_channels(self, latent_channels: int) -> int:
        return self.image_channels

    def degrade(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The super-resolution input: images (B, C, H, W) in [-1, 1] → (B, C, H/f, W/f)."""
        if self.config.sr_degradation == "realistic":
            return degrade_realistic(images, self.config.sr_factor, generator)
        return downsample_bicubic(images, self.config.sr_factor)

    def spatial(self, latent_size: tuple[int, int], *, lowres: torch.Tensor) -> Cond:
        return Cond(concat=lowres_concat(lowres, latent_size))

    def training_spatial(self, data: ImageData, index: torch.Tensor,
                         generator: torch.Generator, codec,
                         latent_size: tuple[int, int]) -> Cond:
        return self.spatial(latent_size,
                            lowres=self.degrade(to_model_range(data.images[index]), generator))
