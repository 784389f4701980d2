"""One request of the web UI → checked inputs → a pipeline run → PNG files carrying their parameters.

`Request` is what a page sends (plain values and uploaded file paths); `run` checks all of it against
the model before any work (a `UserError` with the fix), calls the pipeline of its task with a
progress callback that may stop it (`Cancelled`), and writes one PNG per image, atomically.
"""

import dataclasses
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from latentdiff.conditioning.layout import parse_boxes
from latentdiff.data import to_uint8
from latentdiff.errors import UserError
from latentdiff.images import MAX_PIXELS, draw_boxes, load_image, load_label_map, save_image_grid
from latentdiff.ldm import LatentDiffusion
from latentdiff.parameters import Parameters
from latentdiff.pipelines import conditional, generate
from latentdiff.pipelines.generate import check_sides
from latentdiff.pipelines.record import cell, record
from latentdiff.samplers import SAMPLERS
from latentdiff.ui.catalog import ModelEntry, tasks

MAX_BATCH = 8
MAX_STEPS = 1000


class Cancelled(Exception):
    """The user pressed cancel: the job stops at the next sampler step."""


@dataclass(frozen=True)
class Request:
    """What a page sends for one job. Images are paths of uploaded files (read here, with the size
    limit); `mask` is (H, W) bool, True = generate."""

    task: str
    prompt: str = ""
    negative_prompt: str = ""
    class_label: int | None = None
    sampler: str = "ddim"
    steps: int = 50
    guidance: float = 1.0
    guidance_rescale: float = 0.0
    seed: int = 0
    batch: int = 1
    width: int | None = None
    height: int | None = None
    strength: float = 0.6
    image: str | None = None
    mask: np.ndarray | None = field(default=None, compare=False)
    boxes: str = ""
    draw_boxes: bool = False
    label_map: str | None = None


@dataclass(frozen=True)
class Result:
    path: Path
    parameters: Parameters


def _number(value, what: str, low: float, high: float, integer: bool = False):
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        raise UserError(f"{what} is empty; give a number in {low:g} … {high:g}")
    if integer and float(value) != int(value):
        raise UserError(f"{what} must be a whole number")
    if not low <= value <= high:
        raise UserError(f"{what} {value:g} is outside {low:g} … {high:g}")
    return int(value) if integer else float(value)


def _latent_size(model: LatentDiffusion, r: Request, max_pixels: int) -> tuple[int, int] | None:
    if r.width is None and r.height is None:
        return None
    width = _number(r.width, "width", 1, 1 << 15, integer=True)
    height = _number(r.height, "height", 1, 1 << 15, integer=True)
    check_sides(model, height, width)
    if width * height > max_pixels:
        raise UserError(f"{width}×{height} is above the server's limit of {max_pixels:,} pixels; "
                        "choose a smaller size")
    f = model.codec.downsampling_factor
    return height // f, width // f


def _options(model: LatentDiffusion, r: Request, batch: int) -> dict:
    """generate's keyword arguments for the request's sampling settings and the condition of its
    `batch` images."""
    if r.sampler not in SAMPLERS:
        raise UserError(f"unknown sampler {r.sampler!r}; choose one of {', '.join(SAMPLERS)}")
    options = {"sampler": r.sampler,
               "steps": _number(r.steps, "steps", 1, MAX_STEPS, integer=True),
               "guidance_scale": _number(r.guidance, "guidance", 0, 100),
               "guidance_rescale": _number(r.guidance_rescale, "guidance rescale", 0, 1)}
    kind = model.conditioner.kind if model.conditioner is not None else None
    if kind == "text":
        options["prompts"] = [r.prompt] * batch
        if r.negative_prompt.strip():
            options["negative_prompts"] = [r.negative_prompt] * batch
    if model.num_classes is not None and r.task in ("txt2img", "img2img", "inpaint"):
        if r.class_label is None:
            raise UserError("this model is class-conditional; pick a class")
        label = _number(r.class_label, "class", 0, len(class_choices(model)) - 1, integer=True)
        options["class_labels"] = [label] * batch
    return options


def class_choices(model: LatentDiffusion) -> list[tuple[str, int]]:
    """(name, label) of the classes a class-conditional model draws (not the null class)."""
    count = model.num_classes - (1 if model.trained_with_null else 0)
    names = list(model.class_names)
    shown = [names[c] if c < len(names) else str(c) for c in range(count)]
    return [(name if name == str(c) else f"{c}: {name}", c) for c, name in enumerate(shown)]


def _require_file(path: str | None, what: str) -> str:
    if not path:
        raise UserError(f"no {what} uploaded; upload one first")
    return path


def run(model: LatentDiffusion, entry: ModelEntry, r: Request, out: Path,
        progress: Callable[[int, int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        max_pixels: int = MAX_PIXELS) -> list[Result]:
    """Run request `r` on `model` and write its images into `out` (one PNG each, with the
    parameters in its text chunks). progress(step, steps) after every sampler step; should_stop()
    True stops the job (`Cancelled`)."""
    if r.task not in tasks(model):
        raise UserError(f"{entry.name} does not do {r.task}; it does {', '.join(tasks(model))}")
    batch = _number(r.batch, "batch size", 1, MAX_BATCH, integer=True)
    options = _options(model, r, batch)
    seed = _number(r.seed, "seed", 0, 2 ** 63 - 1, integer=True)
    seeds = [seed + i for i in range(batch)]
    channels = model.codec.autoencoder.config.in_channels
    extra = {}
    inputs = {}  # the task's inputs, read before any sampling
    if r.task == "txt2img":
        latent_size = _latent_size(model, r, max_pixels)
        if latent_size is not None:
            options["latent_size"] = latent_size
    elif r.task in ("img2img", "inpaint"):
        inputs["image"] = load_image(_require_file(r.image, "image"), channels, max_pixels)
        if r.task == "img2img":
            extra["strength"] = _number(r.strength, "strength", 0.01, 1)
        else:
            inputs["mask"] = _mask(r.mask, inputs["image"].shape[-2:])
    elif r.task == "upscale":
        factor = model.conditioner.config.sr_factor
        inputs["image"] = load_image(_require_file(r.image, "low-resolution image"), channels,
                                     max_pixels // factor ** 2)
    elif r.task == "layout":
        extra["boxes"] = parse_boxes(r.boxes, "the boxes")
    elif r.task == "semantic":
        inputs["map"] = load_label_map(_require_file(r.label_map, "semantic map"), max_pixels)

    def step(info: dict) -> None:
        if should_stop is not None and should_stop():
            raise Cancelled("cancelled")
        if progress is not None:
            progress(info["i"] + 1, info["steps"])

    options["callback"] = step
    if r.task == "txt2img":
        images = to_uint8(generate(model, seeds, **options))
    elif r.task == "img2img":
        images = conditional.img2img(model, inputs["image"], seeds, extra["strength"], **options)
    elif r.task == "inpaint":
        images = conditional.inpaint(model, inputs["image"], inputs["mask"], seeds, **options)
    elif r.task == "upscale":
        images = conditional.upscale(model, inputs["image"], seeds, **options)
    elif r.task == "layout":
        images = conditional.layout_to_image(model, extra["boxes"], seeds, **options)
        if r.draw_boxes:
            images = draw_boxes(images, extra["boxes"])
    else:
        images = conditional.semantic_synthesis(model, inputs["map"], seeds, **options)
    parameters = record(model, entry.path, r.task, seeds, tuple(images.shape[-2:]), **options,
                        **extra)
    parameters = dataclasses.replace(parameters, model=entry.name)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for i, image in enumerate(images):
        own = cell(parameters, i, options.get("prompts"), options.get("class_labels"))
        path = out / f"{r.task}-{seeds[i]}-{secrets.token_hex(6)}.png"
        results.append(Result(save_image_grid(image[None], path, 1, own), own))
    return results


def _mask(mask: np.ndarray | None, size: torch.Size) -> torch.Tensor:
    if mask is None or not mask.any():
        raise UserError("no mask painted; paint the parts to regenerate on the image")
    if tuple(mask.shape) != tuple(size):
        raise UserError(f"the mask is {mask.shape[1]}×{mask.shape[0]} but the image is "
                        f"{size[1]}×{size[0]}; paint on the uploaded image itself")
    return torch.from_numpy(mask.astype(np.float32))


def parameters_json(parameters: Parameters) -> str:
    """The parameters as indented JSON for the page."""
    return json.dumps({k: v for k, v in parameters.__dict__.items() if v is not None}, indent=1)
