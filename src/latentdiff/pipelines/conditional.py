"""Conditional tasks on top of `generate` (SPEC §3): inpainting, super-resolution, semantic and layout synthesis.

Each function validates its input against the model (UserError on a mismatch), builds the concatenated or token
condition, samples one image per seed and returns uint8 (N, C, H, W). Spatial conditions set the latent size, so a
larger input samples a larger image convolutionally (beyond the training size).
"""

from collections.abc import Sequence

import torch

from latentdiff.conditioning import Cond
from latentdiff.conditioning.spatial import check_mask, paste_unmasked
from latentdiff.data import to_model_range, to_uint8
from latentdiff.errors import UserError
from latentdiff.ldm import LatentDiffusion
from latentdiff.pipelines.generate import generate


def _require(model: LatentDiffusion, kind: str) -> None:
    have = model.conditioner.kind if model.conditioner else "nothing (or class labels)"
    if have != kind:
        raise UserError(f"this model is conditioned on {have}; the task needs a model trained with "
                        f"conditioning.kind={kind}")


def _latent_size(model: LatentDiffusion, height: int, width: int, what: str) -> tuple[int, int]:
    f = model.codec.downsampling_factor
    if height % f or width % f:
        raise UserError(f"the {what} is {width}×{height}; both sides must be multiples of {f} (the autoencoder's f)")
    return height // f, width // f


def _repeat(cond: Cond, n: int) -> Cond:
    return Cond(concat=cond.concat.expand(n, *cond.concat.shape[1:]))


@torch.no_grad()
def inpaint(model: LatentDiffusion, image: torch.Tensor, mask: torch.Tensor, seeds: Sequence[int],
            **options) -> torch.Tensor:
    """image: uint8 (C, H, W); mask: (H, W) 1 = generate. Every pixel where mask = 0 is the input's, bit for bit."""
    _require(model, "inpaint")
    if image.shape[0] != model.codec.autoencoder.config.in_channels:
        raise UserError(f"the image has {image.shape[0]} channels; the model takes "
                        f"{model.codec.autoencoder.config.in_channels}")
    m = check_mask(mask, image.shape)  # (1, 1, H, W)
    latent_size = _latent_size(model, image.shape[1], image.shape[2], "image")
    x = to_model_range(image)[None].to(model.device)
    masked_latent = model.codec.encode(x * (1 - m.to(x)))
    cond = model.conditioner.spatial(latent_size, masked_latent=masked_latent, mask=m.to(x))
    generated = to_uint8(generate(model, seeds, spatial=_repeat(cond, len(seeds)), **options))
    return paste_unmasked(image[None].expand(len(seeds), -1, -1, -1), generated, m)


@torch.no_grad()
def upscale(model: LatentDiffusion, lowres: torch.Tensor, seeds: Sequence[int], **options) -> torch.Tensor:
    """lowres: uint8 (C, h, w) → (N, C, f_sr·h, f_sr·w), f_sr the model's conditioning.sr_factor."""
    _require(model, "superres")
    factor = model.conditioner.config.sr_factor
    latent_size = _latent_size(model, lowres.shape[1] * factor, lowres.shape[2] * factor, "upscaled image")
    cond = model.conditioner.spatial(latent_size, lowres=to_model_range(lowres)[None].to(model.device))
    return to_uint8(generate(model, seeds, spatial=_repeat(cond, len(seeds)), **options))


@torch.no_grad()
def semantic_synthesis(model: LatentDiffusion, label_map: torch.Tensor, seeds: Sequence[int],
                       **options) -> torch.Tensor:
    """label_map: (H, W) int class ids → images (N, C, H, W)."""
    _require(model, "semantic")
    latent_size = _latent_size(model, label_map.shape[0], label_map.shape[1], "semantic map")
    cond = model.conditioner.spatial(latent_size, semantic=label_map[None].to(model.device))
    return to_uint8(generate(model, seeds, spatial=_repeat(cond, len(seeds)), **options))


@torch.no_grad()
def layout_to_image(model: LatentDiffusion, boxes: Sequence[Sequence[float]], seeds: Sequence[int],
                    **options) -> torch.Tensor:
    """boxes: [[x0, y0, x1, y1, class], ...] in [0, 1] (y down) → images (N, C, H, W)."""
    _require(model, "layout")
    layout = [tuple(float(v) for v in box) for box in boxes]  # checked by the layout tokenizer
    return to_uint8(generate(model, seeds, layouts=[layout] * len(seeds), **options))
