"""Spatially aligned conditioning by concatenation (paper Sec. 3.3): semantic maps, low-resolution
images, inpainting masks.

`SpatialConditioner` is the kinds' common part (`semantic.py`, `superres.py`, `inpainting.py`): a
training batch's input is built from its images, and the null condition is zeros. Each helper
returns a (B, k, h, w) tensor at the latent size that the UNet concatenates to z_t (so the UNet's
in_channels = latent channels + k). Images are in [-1, 1]; masks are 1 where the image is to be
generated.
"""

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from latentdiff.conditioning import Cond
from latentdiff.conditioning.conditioner import Conditioner
from latentdiff.config import ConditioningConfig
from latentdiff.data import ImageData
from latentdiff.errors import UserError


class SpatialConditioner(Conditioner):
    """A kind whose y is an image-shaped input concatenated to z_t; `training_spatial` builds it for
    a batch."""

    @classmethod
    def from_data(cls, cfg: ConditioningConfig, data: ImageData) -> "SpatialConditioner":
        return cls(cfg, semantic_classes=data.semantic_classes, image_channels=data.channels)

    @classmethod
    def from_metadata(cls, cfg: ConditioningConfig, metadata: dict, folder) -> "SpatialConditioner":
        return cls(cfg, int(metadata["semantic_classes"]), int(metadata["image_channels"]))

    def training_spatial(self, data: ImageData, index: torch.Tensor,
                         generator: torch.Generator, codec,
                         latent_size: tuple[int, int]) -> Cond:
        """Cond(concat) of the training images `index` (B,), drawn with `generator` where the kind
        is random."""
        raise NotImplementedError

    def batch_condition(self, data: ImageData, index: torch.Tensor,
                        generator: torch.Generator, codec,
                        latent_size: tuple[int, int], drop: torch.Tensor, cached=None) -> Cond:
        """The training input, zeros in the dropped rows (the null condition)."""
        concat = self.training_spatial(data, index, generator, codec, latent_size).concat
        return Cond(concat=torch.where(drop[:, None, None, None], torch.zeros_like(concat), concat))

    def preview_inputs(self, data: ImageData, index: torch.Tensor, codec,
                       latent_size: tuple[int, int]) -> dict:
        """{"spatial": …} of the images `index`, random parts drawn as a training batch's from seed
        0."""
        generator = torch.Generator().manual_seed(0)
        torch.rand(len(index), generator=generator)  # where a training batch draws its dropout
        return {"spatial": self.training_spatial(data, index, generator, codec, latent_size)}


def semantic_concat(labels: torch.Tensor, num_classes: int,
                    latent_size: tuple[int, int]) -> torch.Tensor:
    """labels (B, H, W) int in 0..num_classes−1 → (B, num_classes, h, w) one-hot, area-averaged to
    the latent size."""
    if labels.min() < 0 or labels.max() >= num_classes:
        raise UserError(f"the semantic map has labels {int(labels.min())} … {int(labels.max())}; "
                        f"this model knows 0 … {num_classes - 1}")
    one_hot = F.one_hot(labels.long(), num_classes).permute(0, 3, 1, 2).float()
    return F.adaptive_avg_pool2d(one_hot, latent_size)


def lowres_concat(lowres: torch.Tensor, latent_size: tuple[int, int]) -> torch.Tensor:
    """A low-resolution image (B, C, h', w') in [-1, 1] → (B, C, h, w), bicubic to the latent size
    when it differs."""
    if tuple(lowres.shape[-2:]) == tuple(latent_size):
        return lowres
    return F.interpolate(lowres, size=latent_size, mode="bicubic", align_corners=False).clamp(-1, 1)


def downsample_bicubic(x: torch.Tensor, factor: int) -> torch.Tensor:
    """The classic SR degradation: bicubic (antialiased) ×1/factor. x (B, C, H, W) → (B, C,
    H/factor, W/factor)."""
    return F.interpolate(x, scale_factor=1 / factor, mode="bicubic", antialias=True,
                         align_corners=False).clamp(-1, 1)


def degrade_realistic(x: torch.Tensor, factor: int, generator: torch.Generator) -> torch.Tensor:
    """A simplified BSR degradation (Zhang et al. 2021): Gaussian blur (σ ∈ [0.2, 0.5·factor] px),
    bicubic ×1/factor, Gaussian noise (σ ∈ [0, 0.1] in [-1, 1] units), JPEG (quality 30–95);
    parameters drawn per image from `generator`. x (B, C, H, W) in [-1, 1] → (B, C, H/factor,
    W/factor)."""
    out = []
    for image in x:
        sigma = 0.2 + (0.5 * factor - 0.2) * torch.rand((), generator=generator).item()
        radius = max(1, int(3 * sigma + 0.5))
        taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=x.dtype) / sigma) ** 2)
        taps = taps / taps.sum()
        channels = image.shape[0]
        blurred = F.conv2d(F.pad(image[None], (radius,) * 4, mode="reflect"),
                           taps.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
        blurred = F.conv2d(blurred,
                           taps.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)
        small = downsample_bicubic(blurred, factor)
        noise_std = 0.1 * torch.rand((), generator=generator).item()
        noise = torch.randn(small.shape, generator=generator, dtype=x.dtype)
        small = (small + noise_std * noise).clamp(-1, 1)
        quality = int(30 + 65 * torch.rand((), generator=generator).item())
        out.append(_jpeg(small[0], quality))
    return torch.stack(out)


def _jpeg(image: torch.Tensor, quality: int) -> torch.Tensor:
    """JPEG round trip of one (C, H, W) image in [-1, 1] through Pillow."""
    pixels = ((image.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    mode = "L" if pixels.shape[2] == 1 else "RGB"
    buffer = io.BytesIO()
    Image.fromarray(pixels.squeeze(2) if mode == "L" else pixels, mode).save(buffer, "JPEG", quality=quality)
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert(mode), dtype=np.float32)
    decoded = decoded[:, :, None] if mode == "L" else decoded
    return torch.from_numpy(decoded).permute(2, 0, 1) / 127.5 - 1


def check_mask(mask: torch.Tensor, image_shape: torch.Size) -> torch.Tensor:
    """A mask (B, 1, H, W) or (H, W) of 0/1 matching the image → float (B, 1, H, W); one-line errors
    otherwise."""
    if mask.ndim == 2:
        mask = mask[None, None]
    if tuple(mask.shape[-2:]) != tuple(image_shape[-2:]):
        raise UserError(f"the mask is {mask.shape[-1]}×{mask.shape[-2]} but the image is "
                        f"{image_shape[-1]}×{image_shape[-2]}; give a mask of the image's size")
    values = torch.unique(mask)
    if not all(v in (0, 1) for v in values.tolist()):
        raise UserError("the mask is not binary; use 0 (keep) and 1 (generate), e.g. a "
                        "black/white PNG")
    return mask.float()


def inpainting_concat(masked_latent: torch.Tensor, mask: torch.Tensor, mask_first: bool = False,
                      nearest: bool = False) -> torch.Tensor:
    """[E(x ⊙ (1 − m)) (B, c, h, w), m downsampled to (h, w) (B, 1, h, w)] → (B, c + 1, h, w).

    The mask is max-pooled, so a latent cell that touches any hole pixel counts as a hole, or
    (`nearest`, as the original inpainting scripts) resized by nearest neighbour. `mask_first`:
    Stable Diffusion inpainting's layout instead, [m resized by nearest neighbour, E(x ⊙
    (1 − m))]."""
    size = masked_latent.shape[-2:]
    if mask_first or nearest:
        small_mask = F.interpolate(mask.float(), size=size, mode="nearest").to(masked_latent.dtype)
    else:
        small_mask = F.adaptive_max_pool2d(mask.float(), size).to(masked_latent.dtype)
    return torch.cat([small_mask, masked_latent] if mask_first else [masked_latent, small_mask],
                     dim=1)


def paste_unmasked(original: torch.Tensor, generated: torch.Tensor,
                   mask: torch.Tensor) -> torch.Tensor:
    """Pixels where mask = 0 are copied from `original` bit for bit (any dtype, e.g. uint8
    (B, C, H, W))."""
    return torch.where(mask.bool().expand_as(original), generated.to(original.dtype), original)


def masked_image_concat(cfg: ConditioningConfig, masked_latent: torch.Tensor,
                        mask: torch.Tensor) -> torch.Tensor:
    """The inpainting input of a model with config `cfg`: latentdiff's [E(x ⊙ (1 − m)), m] (m
    max-pooled, or nearest for the original inpainting model), or Stable Diffusion inpainting's [m,
    E(x ⊙ (1 − m))] (masked_image)."""
    return inpainting_concat(masked_latent, mask, mask_first=cfg.masked_image,
                             nearest=cfg.mask_downsampling == "nearest")


def random_masks(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 1, size, size) float masks (1 = generate): one to three random rectangles, each ¼–¾ of
    the side."""
    masks = torch.zeros(n, 1, size, size)
    for i in range(n):
        for _ in range(int(torch.randint(1, 4, (), generator=generator))):
            h, w = (int(v) for v in torch.randint(size // 4, 3 * size // 4 + 1,
                                                  (2,), generator=generator))
            top, left = (int(torch.randint(0, size - s + 1, (), generator=generator))
                         for s in (h, w))
            masks[i, :, top:top + h, left:left + w] = 1
    return masks
