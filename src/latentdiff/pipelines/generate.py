"""Generation: validate the request, draw x_T per seed, run a sampler on the (guided) denoiser, decode with the codec."""

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from latentdiff.conditioning import Cond
from latentdiff.denoiser import GuidedDenoiser, ImageGuidedDenoiser, MaskedDenoiser
from latentdiff.errors import UserError
from latentdiff.ldm import LatentDiffusion
from latentdiff.samplers import SAMPLERS, run_sampler, sigma_grid
from latentdiff.samplers.noise import per_sample_generators, randn_like


@dataclass
class LatentEdit:
    """Start from an image's latent instead of noise.

    img2img (SDEdit, Meng et al. 2022): x starts at z₀ + σ_k·ε with σ_k the grid's noise level at `strength`
    (1: the first, pure noise; 0.3: only the last 30 % of the steps run). mask (N, 1, h, w), 1 = generate:
    inpainting by masked blending (`MaskedDenoiser`), where mask = 0 the result keeps z₀.
    """

    latents: torch.Tensor  # (N, c, h, w) scaled latents z₀ of the input images
    strength: float = 1.0
    mask: torch.Tensor | None = None


def _class_tensor(model: LatentDiffusion, class_labels: Sequence[int] | None, n: int) -> torch.Tensor | None:
    if model.num_classes is None:
        if class_labels is not None:
            raise UserError("this model is not class-conditional; drop the class labels (--class)")
        return None
    if class_labels is None:
        raise UserError(f"this model is class-conditional; give class labels 0..{model.num_classes - 1} (--class)")
    labels = torch.as_tensor(list(class_labels), dtype=torch.long)
    if len(labels) != n or labels.min() < 0 or labels.max() >= model.num_classes:
        raise UserError(f"need {n} class labels in 0..{model.num_classes - 1}, got {labels.tolist()[:10]}")
    return labels


def _token_inputs(model: LatentDiffusion, prompts, layouts, n: int) -> list | None:
    """The prompts (text models) or layouts (layout models), one per image; errors when they do not fit the model."""
    kind = model.conditioner.kind if model.conditioner else "none"
    given = {"text": prompts, "layout": layouts}
    for name, value in given.items():
        if value is not None and kind != name:
            raise UserError(f"this model is conditioned on {kind}; it takes no {'prompts' if name == 'text' else 'layouts'}")
    if kind not in given:
        return None
    inputs = given[kind]
    if inputs is None:
        raise UserError(f"this model is conditioned on {kind}; give " + ("--prompt" if kind == "text" else "--boxes"))
    if len(inputs) != n:
        raise UserError(f"{len(inputs)} {'prompts' if kind == 'text' else 'layouts'} for {n} images")
    return list(inputs)


def null_condition(model: LatentDiffusion, cond: Cond, negative: list | None, n: int) -> Cond:
    """The unconditional (or negative-prompt) counterpart of `cond` (a batch of n) for classifier-free guidance."""
    labels = None
    if cond.class_labels is not None:
        labels = torch.full_like(cond.class_labels, model.num_classes - 1)  # the null class, last
    if cond.context is not None:
        conditioner = model.conditioner
        tokens = conditioner.tokens(negative) if negative is not None else conditioner.null_tokens(n)
        encoded = conditioner.encode(tokens.to(model.device))  # a concatenated input stays (SD inpainting's null)
        return Cond(class_labels=labels, context=encoded.context, context_mask=encoded.context_mask, concat=cond.concat)
    concat = None if cond.concat is None else torch.zeros_like(cond.concat)
    return Cond(class_labels=labels, concat=concat)


@torch.no_grad()
def generate(model: LatentDiffusion, seeds: Sequence[int], class_labels: Sequence[int] | None = None, *,
             prompts: Sequence[str] | None = None, negative_prompts: Sequence[str] | None = None,
             layouts: Sequence[list] | None = None, spatial: Cond | None = None, guidance_scale: float = 1.0,
             guidance_rescale: float = 0.0, guidance_interval: tuple[float, float] | None = None,
             latent_size: tuple[int, int] | None = None, sampler: str = "ddim", steps: int = 50,
             spacing: str = "uniform", final: str = "zero", batch_size: int = 250,
             image_guide: tuple[torch.Tensor, float] | None = None, edit: LatentEdit | None = None,
             decode: bool = True, **sampler_options) -> torch.Tensor:
    """One image per seed → (N, C, H, W) float in [-1, 1] (decode=False: the scaled latents z₀ (N, c, h, w) that
    the decoder would read).

    Image i depends only on seeds[i] and its own condition (class_labels[i], prompts[i], layouts[i], spatial[i]),
    not on the batch it was drawn in (one generator per sample). `spatial` holds concatenated inputs at the latent
    size (see `Conditioner.spatial`); `latent_size` (h, w) samples beyond the training size (default: the training
    size, or the spatial input's). guidance_scale s ≠ 1 applies classifier-free guidance against the null condition
    or `negative_prompts`, only for σ in `guidance_interval` (σ_lo, σ_hi) when given. `image_guide` (targets
    (N, C, h', w') in [-1, 1], scale): post-hoc image guidance, the decoded sample resized to h'×w' is pulled
    towards target i (`ImageGuidedDenoiser`; e.g. a coherent large sample from an unconditional model). `edit`:
    img2img and blended inpainting (`LatentEdit`). `final`: the grid's end, σ = 0 or "t0" (`sigma_grid`); a sample
    that stops at σ_end > 0 is decoded as the latent z = x/√(1 + σ_end²), what CompVis's DDIM returns there.
    sampler_options go to the sampler (e.g. eta).
    """
    if sampler not in SAMPLERS:
        raise UserError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if guidance_scale < 0 or not 0.0 <= guidance_rescale <= 1.0:
        raise UserError(f"guidance scale {guidance_scale} must be ≥ 0 and guidance rescale {guidance_rescale} in [0, 1]")
    if guidance_interval is not None and not 0 <= guidance_interval[0] < guidance_interval[1]:
        raise UserError(f"guidance interval {list(guidance_interval)} must be σ_lo σ_hi with 0 ≤ σ_lo < σ_hi")
    if guidance_scale != 1.0 and not model.trained_with_null:
        raise UserError("this model was trained without condition dropout (conditioning.drop_prob = 0), so it has no "
                        "unconditional mode; sample with guidance scale 1")
    n = len(seeds)
    labels = _class_tensor(model, class_labels, n)
    token_inputs = _token_inputs(model, prompts, layouts, n)
    if model.conditioner is not None and model.conditioner.kind == "class":  # the label is a cross-attention token
        token_inputs, labels = labels.tolist(), None
    if negative_prompts is not None and (prompts is None or len(negative_prompts) != n):
        raise UserError("negative prompts need a text model and one negative prompt per image")
    if spatial is not None:
        latent_size = tuple(spatial.concat.shape[-2:])
    c, *trained_size = model.latent_shape
    sigmas = sigma_grid(model.schedule, steps, spacing, final=final).to(model.device)
    if edit is not None:
        if not 0.0 < edit.strength <= 1.0:
            raise UserError(f"img2img strength {edit.strength} must be in (0, 1]")
        if len(edit.latents) != n:
            raise UserError(f"{len(edit.latents)} input latents for {n} images")
        latent_size = tuple(edit.latents.shape[-2:])
        sigmas = sigmas[max(0, len(sigmas) - 1 - max(1, round(edit.strength * steps))):]
    shape = (c, *(latent_size or trained_size))
    out = []
    for start in range(0, n, batch_size):
        rows = slice(start, start + batch_size)
        generators = per_sample_generators(list(seeds[rows]))
        x = randn_like(torch.empty(len(generators), *shape, device=model.device), generators)
        row_labels = None if labels is None else labels[rows]
        concat = None if spatial is None else spatial.concat[rows]
        if token_inputs is not None:  # tokens, and a spatial input too for text models with `masked_image`
            tokens = model.conditioner.tokens(token_inputs[rows]).to(model.device)
            cond = dataclasses.replace(model.conditioner.encode(tokens), class_labels=row_labels, concat=concat)
        else:
            cond = Cond(class_labels=row_labels, concat=concat)
        cond = cond.to(model.device)
        denoiser = model.denoiser
        if guidance_scale != 1.0:
            negative = None if negative_prompts is None else list(negative_prompts[rows])
            denoiser = GuidedDenoiser(denoiser, null_condition(model, cond, negative, len(x)), guidance_scale,
                                      guidance_rescale, guidance_interval)
        if image_guide is not None:
            denoiser = ImageGuidedDenoiser(denoiser, model.codec.decode, image_guide[0][rows].to(model.device),
                                           image_guide[1])
        if edit is None:
            x = x * denoiser.prior_std(sigmas[0])
        else:
            known = edit.latents[rows].to(model.device)
            x = known + sigmas[0] * x
            if edit.mask is not None:
                denoiser = MaskedDenoiser(denoiser, known, edit.mask[rows].to(model.device))
        z = run_sampler(sampler, denoiser, x, sigmas, cond=cond, generator=generators, **sampler_options)
        if not torch.isfinite(z).all():  # never a silent black image
            raise UserError(f"sampling produced non-finite values (nan or inf) with {sampler} at these options; "
                            f"try fewer guidance or sampler options, more steps, or --dtype fp32")
        z = z / (1 + sigmas[-1] ** 2).sqrt()
        out.append((model.codec.decode(z) if decode else z).cpu())
    return torch.cat(out)


def class_grid_labels(num_classes: int, per_class: int) -> list[int]:
    """Labels for a grid with one row per class: [0]*per_class + [1]*per_class + ..."""
    return [c for c in range(num_classes) for _ in range(per_class)]
