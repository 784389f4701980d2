"""Generation: validate the request, draw x_T per seed, run a sampler on the (guided) denoiser,
decode with the codec."""

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from latentdiff.coarse_to_fine import StageDenoiser, sample_stages
from latentdiff.conditioning import Cond
from latentdiff.denoiser import GuidedDenoiser, ImageGuidedDenoiser, MaskedDenoiser, check_guidance
from latentdiff.errors import UserError
from latentdiff.guidance import InterleavedGuidedDenoiser, check_interleave_ratio
from latentdiff.ldm import LatentDiffusion
from latentdiff.pipelines.guides import Guides, autoguided, check_guides, with_guides
from latentdiff.samplers import check_sampler, run_sampler, sigma_grid
from latentdiff.samplers.grids import img2img_grid
from latentdiff.samplers.randomness import per_sample_generators, randn_like


@dataclass
class LatentEdit:
    """Start from an image's latent instead of noise.

    img2img (SDEdit, Meng et al. 2022): x starts at z₀ + σ_k·ε with σ_k the grid's noise level at
    `strength` (1: the first, pure noise; 0.3: only the last 30 % of the steps run). mask
    (N, 1, h, w), 1 = generate: inpainting by masked blending (`MaskedDenoiser`), where mask = 0 the
    result keeps z₀.
    """

    latents: torch.Tensor  # (N, c, h, w) scaled latents z₀ of the input images
    strength: float = 1.0
    mask: torch.Tensor | None = None


def check_sides(model: LatentDiffusion, height: int, width: int, what: str = "size",
                fix: str = "choose") -> None:
    """A one-line error unless both pixel sides are multiples of `model.size_multiple` (else the
    UNet's skip connections would not line up)."""
    n = model.size_multiple
    if width % n or height % n:
        raise UserError(f"the {what} is {width}×{height}, not a multiple of {n} (the autoencoder's f "
                        f"times the UNet's downsampling); {fix} multiples of {n}")


def _class_tensor(model: LatentDiffusion, class_labels: Sequence[int] | None,
                  n: int) -> torch.Tensor | None:
    if model.num_classes is None:
        if class_labels is not None:
            raise UserError("this model is not class-conditional; drop the class labels (--class)")
        return None
    if class_labels is None:
        raise UserError("this model is class-conditional; give class labels "
                        f"0..{model.num_classes - 1} (--class)")
    labels = torch.as_tensor(list(class_labels), dtype=torch.long)
    if len(labels) != n or labels.min() < 0 or labels.max() >= model.num_classes:
        raise UserError(f"need {n} class labels in 0..{model.num_classes - 1}, got "
                        f"{labels.tolist()[:10]}")
    return labels


def _token_inputs(model: LatentDiffusion, given: dict, n: int) -> list | None:
    """The token inputs (prompts, layouts or class-token labels), one per image, of the model's
    token kind; `given` maps generate's keywords to what the caller passed. Errors when they do not
    fit the model."""
    conditioner = model.conditioner
    wanted = getattr(conditioner, "input_name", None)
    for name, value in given.items():
        if value is not None and name != wanted:
            raise UserError("this model is conditioned on "
                            f"{conditioner.kind if conditioner else 'none'}; it takes no {name}")
    if wanted is None:
        return None
    inputs = given.get(wanted)
    if inputs is None:
        raise UserError(f"this model is conditioned on {conditioner.kind}; give "
                        f"{conditioner.input_flag}")
    if len(inputs) != n:
        raise UserError(f"{len(inputs)} {wanted} for {n} images")
    return list(inputs)


def sample_conditions(model, n: int, class_labels: Sequence[int] | None,
                      prompts: Sequence[str] | None, layouts: Sequence[list] | None
                      ) -> tuple[torch.Tensor | None, list | None]:
    """(class labels (n,) for the network's label embedding, token inputs: prompts, layouts or
    class-token labels) of n samples of `model` (any system with `num_classes` and `conditioner`),
    with one-line errors when they do not fit it."""
    labels = _class_tensor(model, class_labels, n)
    given = {"prompts": prompts, "layouts": layouts}
    # the label is a cross-attention token
    if model.conditioner is not None and model.conditioner.num_classes:
        given["class_labels"], labels = labels.tolist(), None
    return labels, _token_inputs(model, given, n)


def null_condition(model: LatentDiffusion, cond: Cond, negative: list | None, n: int,
                   inputs: list | None = None) -> Cond:
    """The unconditional (or negative-prompt) counterpart of `cond` (a batch of n) for
    classifier-free guidance; `inputs`: the token inputs `cond` was made from, for kinds whose null
    depends on them (`TokenConditioner.null_inputs`)."""
    labels = None
    if cond.class_labels is not None:
        labels = torch.full_like(cond.class_labels, model.num_classes - 1)  # the null class, last
    if cond.context is not None:  # a concatenated input stays (SD inpainting's null)
        conditioner = model.conditioner
        if negative is not None:
            inputs = negative
        else:
            inputs = ([conditioner.null_input()] * n if inputs is None
                      else conditioner.null_inputs(list(inputs)))
        encoded = conditioner.condition(inputs, model.device)
        return dataclasses.replace(encoded, class_labels=labels, concat=cond.concat)
    concat = None if cond.concat is None else torch.zeros_like(cond.concat)
    return Cond(class_labels=labels, concat=concat)


def _check_embedded_guidance(model: LatentDiffusion, scale: float, rescale: float,
                             interval: tuple[float, float] | None, negative: list | None) -> None:
    """A student with the guidance scale as an input: s within the scales it was distilled for,
    and no option that needs separate conditional and unconditional passes."""
    c = model.student
    low, high = (c.guidance_min, c.guidance_max) if c is not None else (0.0, float("inf"))
    if not low <= scale <= high:
        raise UserError(f"guidance scale {scale:g} is outside the scales {low:g} … {high:g} this "
                        "student was distilled for; choose one in that range")
    if rescale or interval is not None or negative is not None:
        raise UserError("this student takes the guidance scale as an input (one pass per step): "
                        "guidance rescale, interval and negative prompts need the teacher")


def _check_interleave(model: LatentDiffusion, ratio: float, negative: list | None,
                      guides: Guides) -> None:
    """Interleaved guidance needs a retrieval model, η in [0, 1] and no other unconditional branch."""
    if getattr(model.conditioner, "kind", None) != "retrieval":
        raise UserError("interleaved guidance (--interleave) needs a retrieval-augmented model "
                        "(conditioning.kind=retrieval)")
    check_interleave_ratio(ratio)
    if negative is not None or guides.autoguide is not None:
        raise UserError("interleaved guidance takes its own unconditional branches: drop negative "
                        "prompts and autoguidance")


def sampling_choices(model: LatentDiffusion, **given) -> dict:
    """The given sampling options (sampler, steps, spacing, guidance_scale, original_steps) with
    those left None taken from `model.sampling_defaults`."""
    defaults = model.sampling_defaults
    return {k: defaults[k] if v is None else v for k, v in given.items()}


def _batch_callback(callback: Callable[[dict], None] | None, steps: int, batch: int,
                    offset: int = 0) -> Callable[[dict], None] | None:
    """The sampler's callback: info with the steps of the batch and its first row added, its step
    i counted from `offset` (the steps of the stages before it)."""
    if callback is None:
        return None
    return lambda info: callback({**info, "i": info["i"] + offset, "steps": steps, "batch": batch})


def _check_stages(model: LatentDiffusion, edit: LatentEdit | None, image_guide, guides: Guides
                  ) -> None:
    """A coarse-to-fine model's network sees one pyramid level at a time: no option that reads or
    writes the whole latent during sampling."""
    if model.coarse_to_fine is not None and (edit is not None or image_guide is not None
                                             or guides.active):
        raise UserError("this model samples coarse to fine (Frido), one pyramid level at a time; "
                        "img2img, inpainting, image guidance, classifier guidance, autoguidance "
                        "and a prior need a one-stage model")


@torch.no_grad()
def generate(model: LatentDiffusion, seeds: Sequence[int],
             class_labels: Sequence[int] | None = None, *,
             prompts: Sequence[str] | None = None, negative_prompts: Sequence[str] | None = None,
             layouts: Sequence[list] | None = None, spatial: Cond | None = None,
             guidance_scale: float | None = None,
             guidance_rescale: float = 0.0, guidance_interval: tuple[float, float] | None = None,
             latent_size: tuple[int, int] | None = None, sampler: str | None = None,
             steps: int | None = None, spacing: str | None = None, final: str = "zero",
             original_steps: int | None = None, batch_size: int = 250,
             image_guide: tuple[torch.Tensor, float] | None = None, edit: LatentEdit | None = None,
             decode: bool = True, callback: Callable[[dict], None] | None = None,
             guides: Guides | None = None, interleave: float | None = None,
             **sampler_options) -> torch.Tensor:
    """One image per seed → (N, C, H, W) float in [-1, 1] (decode=False: the scaled latents z₀
    (N, c, h, w) that the decoder would read).

    Image i depends only on seeds[i] and its own condition (class_labels[i], prompts[i], layouts[i],
    spatial[i]), not on the batch it was drawn in (one generator per sample). `spatial` holds
    concatenated inputs at the latent size (see `Conditioner.spatial`); `latent_size` (h, w) samples
    beyond the training size (default: the training size, or the spatial input's). guidance_scale s
    ≠ 1 applies classifier-free guidance against the null condition or `negative_prompts`, only for
    σ in `guidance_interval` (σ_lo, σ_hi) when given. `image_guide` (targets (N, C, h', w') in [-1,
    1], scale): post-hoc image guidance, the decoded sample resized to h'×w' is pulled towards
    target i (`ImageGuidedDenoiser`; e.g. a coherent large sample from an unconditional model).
    `edit`: img2img and blended inpainting (`LatentEdit`). A truncated model (`model.prior`, TDPM)
    starts each chain from its prior's draw at σ_{t_trunc} and runs `steps` steps of the truncated
    chain (grids over timesteps t_trunc … 0). `final`: the grid's end, σ = 0 or "t0"
    (`sigma_grid`); a sample that stops at σ_end > 0 is decoded as the latent z = x/√(1 + σ_end²),
    what CompVis's DDIM returns there. sampler_options go to the sampler (e.g. eta). sampler, steps,
    spacing, guidance_scale and original_steps (the lcm grid's) left None are the model's
    (`LatentDiffusion.sampling_defaults`: DDIM, 50 steps, no guidance; a student's own).
    A student that embeds the guidance scale takes s as an input: one network evaluation per step.
    `callback(info)` after every step of every batch: the sampler's {"i", "x", "sigma",
    "denoised"} with "steps" (the steps of a batch) and "batch" (its first row) added; it may raise
    to stop the work (a cancel button). `guides`: classifier guidance, autoguidance (which then
    takes guidance_scale instead of the unconditional branch) and an unconditional prior
    (`pipelines/guides.py`); the classifier, semantic guidance and the prior too apply only in
    `guidance_interval`. `interleave` η (retrieval models, Re-Imagen): guidance against the
    hidden references at a share 1 − η of the noise levels and against the empty prompt (with the
    references kept, the plain guidance of these models) at the others
    (`InterleavedGuidedDenoiser`).
    """
    chosen = sampling_choices(model, sampler=sampler, steps=steps, spacing=spacing,
                              guidance_scale=guidance_scale, original_steps=original_steps)
    sampler, steps, spacing = chosen["sampler"], chosen["steps"], chosen["spacing"]
    guidance_scale = chosen["guidance_scale"]
    check_sampler(sampler)  # both also checked where they are used; here, before any work
    check_guidance(guidance_scale, guidance_rescale, guidance_interval)
    embedded = model.unet.config.guidance_embedding
    if embedded:
        _check_embedded_guidance(model, guidance_scale, guidance_rescale, guidance_interval,
                                 negative_prompts)
    guides = guides or Guides()
    _check_stages(model, edit, image_guide, guides)
    check_guides(model, guides, len(seeds))
    if embedded and guides.autoguide is not None:
        raise UserError("this student takes the guidance scale as an input; it cannot be autoguided")
    elif (not embedded and guidance_scale != 1.0 and not model.trained_with_null
          and guides.autoguide is None):
        raise UserError("this model was trained without condition dropout (conditioning.drop_prob "
                        "= 0), so it has no unconditional mode; sample with guidance scale 1")
    if interleave is not None:
        _check_interleave(model, interleave, negative_prompts, guides)
    n = len(seeds)
    labels, token_inputs = sample_conditions(model, n, class_labels, prompts, layouts)
    if negative_prompts is not None and (prompts is None or len(negative_prompts) != n):
        raise UserError("negative prompts need a text model and one negative prompt per image")
    if spatial is not None:
        latent_size = tuple(spatial.concat.shape[-2:])
    c, *trained_size = model.latent_shape
    prior = model.prior if edit is None else None  # img2img starts from its own latents
    sigmas = sigma_grid(model.schedule, steps, spacing, final=final,
                        original_steps=chosen["original_steps"],
                        t_max=None if prior is None else prior.t_trunc).to(model.device)
    if edit is not None:
        if len(edit.latents) != n:
            raise UserError(f"{len(edit.latents)} input latents for {n} images")
        latent_size = tuple(edit.latents.shape[-2:])
        sigmas = img2img_grid(sigmas, edit.strength, steps)
    shape = (c, *(latent_size or trained_size))
    f = model.codec.downsampling_factor
    check_sides(model, shape[1] * f, shape[2] * f)
    out = []
    for start in range(0, n, batch_size):
        rows = slice(start, start + batch_size)
        generators = per_sample_generators(list(seeds[rows]))
        if model.coarse_to_fine is None:
            x = randn_like(torch.empty(len(generators), *shape, device=model.device), generators)
        row_labels = None if labels is None else labels[rows]
        concat = None if spatial is None else spatial.concat[rows]
        # tokens, and a spatial input too for text models with `masked_image`
        if token_inputs is not None:
            cond = dataclasses.replace(model.conditioner.condition(token_inputs[rows], model.device),
                                       class_labels=row_labels, concat=concat)
        else:
            cond = Cond(class_labels=row_labels, concat=concat)
        cond = cond.to(model.device)
        # a coarse-to-fine model's innermost denoiser: one pyramid level per stage
        stages = None if model.coarse_to_fine is None else StageDenoiser(model.denoiser,
                                                                         model.num_stages)
        denoiser = stages or model.denoiser
        if embedded:
            cond = dataclasses.replace(cond, guidance=torch.full(
                (len(generators),), float(guidance_scale), device=model.device))
        elif guidance_scale != 1.0 and guides.autoguide is not None:
            denoiser = autoguided(guides, denoiser, cond,
                                  None if token_inputs is None else token_inputs[rows],
                                  guidance_scale, guidance_rescale, guidance_interval)
        elif guidance_scale != 1.0:
            negative = None if negative_prompts is None else list(negative_prompts[rows])
            inputs = None if token_inputs is None else token_inputs[rows]
            uncond = null_condition(model, cond, negative, len(generators), inputs)
            if interleave is None:
                denoiser = GuidedDenoiser(denoiser, uncond, guidance_scale, guidance_rescale,
                                          guidance_interval)
            else:
                hidden = model.conditioner.condition(
                    model.conditioner.reference_null_inputs(list(inputs)), model.device)
                denoiser = InterleavedGuidedDenoiser(denoiser, uncond, hidden, interleave,
                                                     guidance_scale, guidance_rescale,
                                                     guidance_interval)
        denoiser = with_guides(guides, model, denoiser, rows, guidance_interval)
        if image_guide is not None:
            denoiser = ImageGuidedDenoiser(denoiser, model.codec.decode,
                                           image_guide[0][rows].to(model.device),
                                           image_guide[1])
        known = None if edit is None else edit.latents[rows].to(model.device)
        if edit is not None and edit.mask is not None:
            denoiser = MaskedDenoiser(denoiser, known, edit.mask[rows].to(model.device))
        n_steps = len(sigmas) - 1

        def run(x: torch.Tensor, stage: int = 0) -> torch.Tensor:
            x = denoiser.start(x, sigmas[0], known) if prior is None else prior.draw(x)
            z = run_sampler(sampler, denoiser, x, sigmas, cond=cond, generator=generators,
                            **sampler_options, callback=_batch_callback(
                                callback, n_steps * model.num_stages, start, n_steps * stage))
            if not torch.isfinite(z).all():  # never a silent black image
                raise UserError(f"sampling produced non-finite values (nan or inf) with {sampler} "
                                "at these options; try fewer guidance or sampler options, more "
                                "steps, or --dtype fp32")
            return denoiser.latent(z, sigmas[-1])
        z = run(x) if stages is None else sample_stages(
            stages, run, shape, generators, model.coarse_to_fine.noise_mix, model.device)
        out.append((model.codec.decode(z) if decode else z).cpu())
    return torch.cat(out)

