"""The `Parameters` record of a generation request: the caller's options with the model's defaults
filled in, so that what a PNG carries is what ran."""

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from latentdiff.ldm import LatentDiffusion
from latentdiff.parameters import Parameters, model_hash
from latentdiff.pipelines.generate import sampling_choices

# generate's keyword arguments that carry inputs, not settings of the method
_INPUTS = ("latent_size", "spatial", "edit", "image_guide", "layouts", "callback", "batch_size",
           "decode")


def model_name(checkpoint: str | Path) -> str:
    """A checkpoint's display name: its file name without the extension (a folder's name)."""
    path = Path(checkpoint)
    return path.name if path.is_dir() else path.stem


def record(model: LatentDiffusion, checkpoint: str | Path, task: str, seeds: Sequence[int],
           size: tuple[int, int], *, prompts: Sequence[str] | None = None,
           negative_prompts: Sequence[str] | None = None,
           class_labels: Sequence[int] | None = None, sampler: str | None = None,
           steps: int | None = None, spacing: str | None = None,
           guidance_scale: float | None = None, guidance_rescale: float = 0.0,
           guidance_interval: tuple[float, float] | None = None,
           strength: float | None = None, boxes: list | None = None, guides=None,
           **options) -> Parameters:
    """Parameters of images generated with `generate`'s keyword arguments; size (H, W) in pixels.
    One seed: that image's; several: the first image's, with `seeds` and `prompts` listing all.
    Options with plain values (a sampler's eta, `final`) are kept as `sampler_options`; those that
    describe the input rather than the method (latent_size, spatial, edit, callback) are not."""
    chosen = sampling_choices(model, sampler=sampler, steps=steps, spacing=spacing,
                              guidance_scale=guidance_scale)
    grid = len(seeds) > 1
    return Parameters(
        task=task, model=model_name(checkpoint), model_hash=model_hash(checkpoint),
        prompt=prompts[0] if prompts else None,
        negative_prompt=negative_prompts[0] if negative_prompts else None,
        class_label=int(class_labels[0]) if class_labels else None,
        sampler=chosen["sampler"], steps=int(chosen["steps"]), spacing=chosen["spacing"],
        guidance=float(chosen["guidance_scale"]), guidance_rescale=float(guidance_rescale),
        seed=int(seeds[0]), height=int(size[0]), width=int(size[1]),
        strength=None if strength is None else float(strength), boxes=boxes,
        guidance_interval=None if guidance_interval is None else list(guidance_interval),
        sampler_options={k: v for k, v in options.items() if k not in _INPUTS
                         and isinstance(v, (bool, int, float, str))} or None,
        guides=None if guides is None else guides.record(),
        seeds=[int(s) for s in seeds] if grid else None,
        prompts=list(prompts) if grid and prompts and len(set(prompts)) > 1 else None)


def cell(parameters: Parameters, i: int, prompts: Sequence[str] | None = None,
         class_labels: Sequence[int] | None = None) -> Parameters:
    """The parameters of image i of a batch recorded by `record`."""
    changes = {"seed": parameters.seeds[i] if parameters.seeds else parameters.seed,
               "seeds": None, "prompts": None}
    if prompts:
        changes["prompt"] = prompts[i]
    if class_labels:
        changes["class_label"] = int(class_labels[i])
    return dataclasses.replace(parameters, **changes)
