"""Semantic synthesis (paper Sec. 3.3 and 4.3.2): a label map, one-hot and area-averaged to the
latent size, concatenated to z_t (optionally projected by a 1×1 convolution, the original
SpatialRescaler's `channel_mapper`)."""

import torch
from torch import nn

from latentdiff.conditioning import Cond
from latentdiff.conditioning.spatial import SpatialConditioner, semantic_concat
from latentdiff.config import ConditioningConfig
from latentdiff.data import ImageData


class SemanticConditioner(SpatialConditioner):
    """label maps (B, H, W) in 0..semantic_classes − 1 → Cond(concat (B, k, h, w)),
    k = semantic_embedding or semantic_classes."""

    kind = "semantic"
    needs = ("semantic", "semantic maps")

    def __init__(self, cfg: ConditioningConfig, semantic_classes: int = 0, image_channels: int = 3):
        super().__init__(cfg, semantic_classes, image_channels)
        if cfg.semantic_embedding:
            self.channel_mapper = nn.Conv2d(semantic_classes, cfg.semantic_embedding, 1, bias=False)

    def concat_channels(self, latent_channels: int) -> int:
        return self.config.semantic_embedding or self.semantic_classes

    def spatial(self, latent_size: tuple[int, int], *, semantic: torch.Tensor) -> Cond:
        concat = semantic_concat(semantic, self.semantic_classes, latent_size)
        if self.config.semantic_embedding:
            with torch.no_grad():
                concat = self.channel_mapper(concat.to(self.channel_mapper.weight))
        return Cond(concat=concat)

    def training_spatial(self, data: ImageData, index: torch.Tensor,
                         generator: torch.Generator, codec,
                         latent_size: tuple[int, int]) -> Cond:
        return self.spatial(latent_size, semantic=data.semantic[index])
