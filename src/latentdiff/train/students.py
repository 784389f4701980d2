"""What every distillation method shares (`distill.py`: consistency distillation; `progressive.py`:
progressive and guided distillation): the frozen teacher with its training latents and conditions,
the batch of a step, the student's checkpoint contents and the preview grid (the loop's
bookkeeping is the engine's `training_loop`).

A student starts from the teacher's UNet (plus a zero-initialised guidance embedding when it is
guided: the teacher was trained with condition dropout and guidance_max > 1) and shares the
teacher's autoencoder and conditioner (τ_θ frozen). Training latents come from the teacher's own
training data (its checkpoint's config, or `data`), encoded once as in `train`.
"""

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from lightning_fabric import Fabric

from latentdiff.checkpoints.io import prefixed, read_metadata
from latentdiff.checkpoints.models import BUNDLED_MODEL, load_latent_diffusion
from latentdiff.coarse_to_fine import refuse_stages
from latentdiff.conditioning import Cond
from latentdiff.config import DataConfig, DistillConfig, LoRAConfig, from_dict, to_dict
from latentdiff.data import ImageData, batch_indices, rank_slice, to_uint8
from latentdiff.errors import UserError
from latentdiff.images import save_image_grid
from latentdiff.ldm import LatentDiffusion
from latentdiff.pipelines import class_grid_labels, generate
from latentdiff.pipelines.generate import null_condition
from latentdiff.train.autoencoder import encode_posteriors, load_training_data
from latentdiff.train.conditions import batch_condition, preview_conditions
from latentdiff.train.engine import Run, check_same, step_generator


def resolved(cfg: DistillConfig) -> DistillConfig:
    """`cfg` with the teacher checked (a diffusion model, not a student) and its data named (the
    teacher's training data unless given; the student's checkpoint stores it for `eval`)."""
    if read_metadata(cfg.teacher).get("student_config") is not None:
        raise UserError(f"{cfg.teacher} is a distilled student; distil from a diffusion model")
    return dataclasses.replace(cfg, data=stored_data(cfg.teacher, cfg.data, "the latents to distil on"))


def stored_data(model: str, data: DataConfig | None, what: str) -> DataConfig:
    """`data`, or when None the training data the checkpoint `model` names (a one-line error when
    it names none; `what` says what the data is for)."""
    if data is not None:
        return data
    stored = (read_metadata(model).get("config") or {}).get("data")
    if stored is None:
        raise UserError(f"{model} does not name its training data; give data.dataset=... "
                        f"(and data.path=...) for {what}")
    return from_dict(DataConfig, stored)


def fixed(config: dict) -> dict:
    """What a resumed run must keep: everything but the loop's settings (train.max_steps may
    grow)."""
    return {k: v for k, v in config.items() if k != "train"}


def check_resumable(run: Run, stored: dict, cfg: DistillConfig, method: str,
                    keep_steps: bool = False) -> None:
    """A one-line error unless the run folder holds a run of this method with this config
    (`keep_steps`: train.max_steps too, where it fixes the stages)."""
    if stored.get("student_config") is None or stored.get("method") != method:
        raise UserError(f"{run.checkpoint} is not a {method} distillation run; choose another "
                        "train.out_dir")
    # through the dataclass: keys a later version added compare at their defaults
    before = to_dict(from_dict(DistillConfig, stored["config"]))
    if keep_steps:
        check_same(before, to_dict(cfg), "the distillation config", run.checkpoint)
    else:
        check_same(fixed(before), fixed(to_dict(cfg)), "the distillation config", run.checkpoint)


def teacher_reference(path: str) -> str:
    """How a student names its teacher: "bundled" for the bundled model, else the absolute path."""
    resolved_path = Path(path).resolve()
    return "bundled" if resolved_path == BUNDLED_MODEL.resolve() else str(resolved_path)


@dataclass
class Batch:
    """One step's training batch: latents z0 and noise (B, c, h, w), the condition (encoded; with
    the guidance scale as `guidance` for a guided student), the null condition (guided) or None,
    the scales s (B,) and a uniform draw u (B,) in [0, 1) for the method's noise level."""

    z0: torch.Tensor
    noise: torch.Tensor
    cond: Cond
    uncond: Cond | None
    scale: torch.Tensor
    u: torch.Tensor


@dataclass
class TeacherData:
    """The frozen teacher and what its student trains on."""

    teacher: LatentDiffusion
    data: ImageData
    means: torch.Tensor
    stds: torch.Tensor
    guided: bool
    cached: object

    @classmethod
    def of(cls, cfg: DistillConfig, device: torch.device) -> "TeacherData":
        teacher = load_latent_diffusion(cfg.teacher, device)
        refuse_stages(teacher, cfg.teacher, "a distillation teacher")
        if cfg.guidance_max > 1.0 and not teacher.trained_with_null:
            raise UserError("the teacher was trained without condition dropout, so it has no "
                            "unconditional mode to guide with; keep guidance_max=1")
        autoencoder = teacher.codec.autoencoder
        data, _ = load_training_data(cfg.data, autoencoder.config.downsampling_factor,
                                     autoencoder.config.in_channels)
        means, stds = encode_posteriors(autoencoder, data, device)
        conditioner = teacher.conditioner
        return cls(teacher, data, means, stds, teacher.trained_with_null and cfg.guidance_max > 1,
                   conditioner.dataset_conditions(data) if conditioner else None)

    def batch(self, cfg: DistillConfig, step: int, fabric: Fabric) -> Batch:
        """The batch of `step`: all of its randomness from the step's generator."""
        tc, teacher = cfg.train, self.teacher
        generator = step_generator(tc.seed, step)
        index = batch_indices(len(self.data), tc.batch_size, step, tc.seed)
        shape = (tc.batch_size, *self.means.shape[1:])
        posterior_noise = torch.randn(shape, generator=generator)
        noise = torch.randn(shape, generator=generator)
        u = torch.rand(tc.batch_size, generator=generator)
        scale = cfg.guidance_min + (cfg.guidance_max - cfg.guidance_min) * torch.rand(
            tc.batch_size, generator=generator)
        index, posterior_noise, noise, u, scale = (
            rank_slice(v, fabric.global_rank, fabric.world_size)
            for v in (index, posterior_noise, noise, u, scale))
        codec, device = teacher.codec, fabric.device
        z0 = codec.normalize(self.means[index] + self.stds[index] * posterior_noise).to(device)
        latent_size = (teacher.image_size // codec.downsampling_factor,) * 2
        cond = batch_condition(teacher.conditioner, self.data, index, generator, codec,
                               latent_size, teacher.unet.config.num_classes, 0.0, self.cached)
        with torch.no_grad():
            cond = cond.to(device)
            if cond.tokens is not None:  # encoded once by the frozen τ_θ
                encoded = teacher.conditioner.encode(cond.tokens)
                cond = dataclasses.replace(cond, tokens=None, context=encoded.context,
                                           context_mask=encoded.context_mask)
            uncond = null_condition(teacher, cond, None, len(z0)) if self.guided else None
        scale = scale.to(device)
        if self.guided:
            cond = dataclasses.replace(cond, guidance=scale)
        return Batch(z0, noise.to(device), cond, uncond, scale, u.to(device))

    def shared_tensors(self, lora: LoRAConfig | None) -> dict[str, torch.Tensor]:
        """What a full student's checkpoint copies from the teacher (autoencoder, τ_θ); nothing for
        an adapter student, which names its teacher instead."""
        if lora is not None:
            return {}
        shared = prefixed("autoencoder.", self.teacher.codec.autoencoder.state_dict())
        conditioner = self.teacher.conditioner
        if conditioner is not None and conditioner.has_weights:
            shared.update({k: v for p in ("conditioner.", "conditioner_ema.")
                           for k, v in prefixed(p, conditioner.state_dict()).items()})
        return shared


def write_preview(run: Run, system: LatentDiffusion, data: ImageData, step: int) -> None:
    """A preview grid of the student (its EMA weights, its default sampler, steps and guidance):
    one row per training condition (the first 8 training images'), or per class, or 8 columns."""
    options, n = {}, 64
    if system.conditioner is not None:
        options = preview_conditions(system, data, torch.arange(8).repeat_interleave(8))
    elif system.num_classes:
        options = {"class_labels": class_grid_labels(system.num_classes, 8)}
        n = len(options["class_labels"])
    images = generate(system, seeds=list(range(n)), **options)
    save_image_grid(to_uint8(images), run.sample_path(step), ncols=8)
