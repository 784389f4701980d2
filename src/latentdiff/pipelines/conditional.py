"""Conditional tasks on top of `generate` (paper Sec. 3.3): inpainting, img2img, super-resolution,
semantic and layout synthesis.

Each function validates its input against the model (UserError on a mismatch), builds the
concatenated or token condition, samples one image per seed and returns uint8 (N, C, H, W). Spatial
conditions set the latent size, so a larger input samples a larger image convolutionally (beyond the
training size).
"""

import logging
from collections.abc import Sequence

import torch

from latentdiff.conditioning import Cond
from latentdiff.conditioning.conditioner import Conditioner
from latentdiff.conditioning.layout import LayoutConditioner
from latentdiff.conditioning.semantic import SemanticConditioner
from latentdiff.conditioning.spatial import check_mask, paste_unmasked
from latentdiff.conditioning.superres import SuperResConditioner
from latentdiff.data import to_model_range, to_uint8
from latentdiff.errors import UserError
from latentdiff.ldm import LatentDiffusion
from latentdiff.pipelines.generate import LatentEdit, check_sides, generate

log = logging.getLogger(__name__)


def _require(model: LatentDiffusion, kind: type[Conditioner]) -> None:
    if not isinstance(model.conditioner, kind):
        have = model.conditioner.kind if model.conditioner else "nothing (or class labels)"
        raise UserError(f"this model is conditioned on {have}; the task needs a model trained with "
                        f"conditioning.kind={kind.kind}")


def _latent_size(model: LatentDiffusion, height: int, width: int, what: str) -> tuple[int, int]:
    f = model.codec.downsampling_factor
    if height % f or width % f:
        raise UserError(f"the {what} is {width}×{height}; both sides must be multiples of {f} (the "
                        "autoencoder's f)")
    check_sides(model, height, width, what, "crop or resize it to")
    return height // f, width // f


def _repeat(cond: Cond, n: int) -> Cond:
    return Cond(concat=cond.concat.expand(n, *cond.concat.shape[1:]))


@torch.no_grad()
def inpaint(model: LatentDiffusion, image: torch.Tensor, mask: torch.Tensor, seeds: Sequence[int],
            **options) -> torch.Tensor:
    """image: uint8 (C, H, W); mask: (H, W) 1 = generate. Every pixel where mask = 0 is the input's,
    bit for bit.

    Models trained for it (conditioning.kind=inpaint) see the masked image and the mask by
    concatenation; any other model inpaints by masked blending (`LatentEdit` with a mask; options
    such as prompts pass through)."""
    m = check_mask(mask, image.shape)  # (1, 1, H, W)
    if not m.any():
        log.warning("warning: the mask is all black, so there is nothing to generate and every "
                    "output repeats the input; paint the parts to generate white")
    x = _model_input(model, image)
    latent_size = _latent_size(model, image.shape[1], image.shape[2], "image")
    if model.conditioner is not None and model.conditioner.inpaints:
        masked_latent = model.codec.encode(x * (1 - m.to(x)))
        cond = model.conditioner.spatial(latent_size, masked_latent=masked_latent, mask=m.to(x))
        generated = generate(model, seeds, spatial=_repeat(cond, len(seeds)), **options)
    else:
        # a latent any masked pixel uses
        latent_mask = torch.nn.functional.adaptive_max_pool2d(m.to(x), latent_size)
        edit = LatentEdit(model.codec.encode(x).expand(len(seeds), -1, -1, -1), 1.0,
                          latent_mask.expand(len(seeds), -1, -1, -1))
        generated = generate(model, seeds, edit=edit, **options)
    return paste_unmasked(image[None].expand(len(seeds), -1, -1, -1), to_uint8(generated), m)


@torch.no_grad()
def img2img(model: LatentDiffusion, image: torch.Tensor,
            seeds: Sequence[int], strength: float = 0.6,
            **options) -> torch.Tensor:
    """SDEdit: noise the image's latent to the grid's level at `strength` and denoise it from there.
    image: uint8 (C, H, W) → (N, C, H, W); options (prompts, guidance, sampler, ...) go to
    `generate`."""
    _latent_size(model, image.shape[1], image.shape[2], "image")
    latents = model.codec.encode(_model_input(model, image))
    return to_uint8(generate(model, seeds,
                             edit=LatentEdit(latents.expand(len(seeds), -1, -1, -1), strength),
                             **options))


def _model_input(model: LatentDiffusion, image: torch.Tensor) -> torch.Tensor:
    """uint8 (C, H, W) → (1, C, H, W) in [-1, 1] on the model's device; one-line error on a channel
    mismatch."""
    if image.shape[0] != model.codec.autoencoder.config.in_channels:
        raise UserError(f"the image has {image.shape[0]} channels; the model takes "
                        f"{model.codec.autoencoder.config.in_channels}")
    return to_model_range(image)[None].to(model.device)


@torch.no_grad()
def upscale(model: LatentDiffusion, lowres: torch.Tensor, seeds: Sequence[int],
            **options) -> torch.Tensor:
    """lowres: uint8 (C, h, w) → (N, C, f_sr·h, f_sr·w), f_sr the model's conditioning.sr_factor."""
    _require(model, SuperResConditioner)
    factor = model.conditioner.config.sr_factor
    latent_size = _latent_size(model, lowres.shape[1] * factor,
                               lowres.shape[2] * factor, "upscaled image")
    cond = model.conditioner.spatial(latent_size,
                                     lowres=to_model_range(lowres)[None].to(model.device))
    return to_uint8(generate(model, seeds, spatial=_repeat(cond, len(seeds)), **options))


@torch.no_grad()
def semantic_synthesis(model: LatentDiffusion, label_map: torch.Tensor, seeds: Sequence[int],
                       **options) -> torch.Tensor:
    """label_map: (H, W) int class ids → images (N, C, H, W)."""
    _require(model, SemanticConditioner)
    latent_size = _latent_size(model, label_map.shape[0], label_map.shape[1], "semantic map")
    cond = model.conditioner.spatial(latent_size, semantic=label_map[None].to(model.device))
    return to_uint8(generate(model, seeds, spatial=_repeat(cond, len(seeds)), **options))


@torch.no_grad()
def layout_to_image(model: LatentDiffusion, boxes: Sequence[Sequence[float]], seeds: Sequence[int],
                    **options) -> torch.Tensor:
    """boxes: [[x0, y0, x1, y1, class], ...] in [0, 1] (y down) → images (N, C, H, W)."""
    _require(model, LayoutConditioner)
    layout = [tuple(float(v) for v in box) for box in boxes]  # checked by the layout tokenizer
    return to_uint8(generate(model, seeds, layouts=[layout] * len(seeds), **options))
