"""Few-step students from a trained teacher: `latentdiff distill lcd TEACHER` (latent consistency
distillation, `distillation.py`; Luo et al. 2023).

The teacher (any latentdiff checkpoint of `train` or `export`) stays frozen; the student is a copy
of its UNet, with a zero-initialised guidance embedding when the teacher has an unconditional mode,
and shares the teacher's autoencoder and conditioner (τ_θ frozen). Training latents come from the
teacher's own training data, encoded once as in `train`. The run folder, checkpoints, resume, stop
signals, logs and previews are the engine's (`engine.py`); the student's checkpoint is a complete
latent-diffusion checkpoint with a `student_config`, so `latentdiff sample STUDENT` and `eval`
use it directly (multistep consistency sampling, `steps` steps).
"""

import dataclasses
import logging
from pathlib import Path

import torch
from lightning_fabric import Fabric

from latentdiff.checkpoints.io import prefixed, read_metadata
from latentdiff.checkpoints.models import (BUNDLED_MODEL, LATENT_DIFFUSION, STUDENT_KEPT,
                                           load_latent_diffusion, student_unet, system_metadata)
from latentdiff.conditioning import Cond
from latentdiff.config import (DataConfig, DistillConfig, LoRAConfig, StudentConfig, from_dict,
                               to_dict)
from latentdiff.consistency import Boundary, ConsistencyDenoiser
from latentdiff.data import ImageData, batch_indices, rank_slice, to_uint8
from latentdiff.denoiser import Denoiser
from latentdiff.distillation import consistency_distillation_loss
from latentdiff.errors import UserError
from latentdiff.images import save_image_grid
from latentdiff.ldm import LatentDiffusion
from latentdiff.pipelines import class_grid_labels, generate
from latentdiff.pipelines.generate import null_condition
from latentdiff.preconditioning import make_preconditioning
from latentdiff.samplers import sigma_grid
from latentdiff.train.autoencoder import encode_posteriors, load_training_data
from latentdiff.train.conditions import batch_condition, preview_conditions
from latentdiff.train.ema import EMA
from latentdiff.train.engine import (Run, check_finite, check_same, due, make_fabric, make_optimizer,
                                     mean_over_processes, optimizer_step, resume_state, seeded,
                                     step_generator, train_state, training_progress)
from latentdiff.nn.lora import AdapterView

log = logging.getLogger(__name__)
METHODS = {"lcd": "latent consistency distillation, the guidance scale as an input (LCM)",
           "lcd-lora": "the same with low-rank adapters on the teacher's weights (LCM-LoRA)"}


def distill(cfg: DistillConfig, method: str = "lcd", resume: bool = False) -> Path:
    """Distil (or continue with resume=True) and return the path of the student's checkpoint."""
    if method not in METHODS:
        raise UserError(f"unknown distillation method {method!r}; choose one of "
                        f"{', '.join(METHODS)}")
    teacher_metadata = read_metadata(cfg.teacher)
    if teacher_metadata.get("student_config") is not None:
        raise UserError(f"{cfg.teacher} is a distilled student; distil from a diffusion model")
    # the student's checkpoint names its data (eval reads it there)
    cfg = dataclasses.replace(cfg, data=cfg.data or _teacher_data(cfg.teacher, teacher_metadata))
    fabric = make_fabric(cfg.train)
    lora = None
    if method == "lcd-lora":
        lora = LoRAConfig(cfg.lora_rank, cfg.lora_alpha or float(cfg.lora_rank))
    return fabric.launch(_distill, cfg, lora, resume)


def _teacher_data(path: str, metadata: dict) -> DataConfig:
    stored = (metadata.get("config") or {}).get("data")
    if stored is None:
        raise UserError(f"{path} does not name its training data; give data.dataset=... (and "
                        "data.path=...) for the latents to distil on")
    return from_dict(DataConfig, stored)


def _fixed(config: dict) -> dict:
    """What a resumed run must keep: everything but the loop's settings (train.max_steps may
    grow)."""
    return {k: v for k, v in config.items() if k != "train"}


def _encoded(model: LatentDiffusion, cond: Cond) -> Cond:
    """Cond with token inputs encoded by the frozen conditioner (context + mask)."""
    if cond.tokens is None:
        return cond
    encoded = model.conditioner.encode(cond.tokens)
    return dataclasses.replace(cond, tokens=None, context=encoded.context,
                               context_mask=encoded.context_mask)


def _teacher_reference(path: str) -> str:
    """How a student names its teacher: "bundled" for the bundled model, else the absolute path."""
    resolved = Path(path).resolve()
    return "bundled" if resolved == BUNDLED_MODEL.resolve() else str(resolved)


def _distill(fabric: Fabric, cfg: DistillConfig, lora: LoRAConfig | None, resume: bool) -> Path:
    tc = cfg.train
    method_name = "lcd" if lora is None else "lcd-lora"
    run = Run(Path(tc.out_dir), fabric, tc.keep_checkpoints)
    stored = run.start(resume)
    teacher = load_latent_diffusion(cfg.teacher, fabric.device)
    codec = teacher.codec
    autoencoder = codec.autoencoder
    guided = teacher.trained_with_null and cfg.guidance_max > 1.0
    if cfg.guidance_max > 1.0 and not teacher.trained_with_null:
        raise UserError("the teacher was trained without condition dropout, so it has no "
                        "unconditional mode to guide with; keep guidance_max=1")
    train_data, _ = load_training_data(cfg.data, autoencoder.config.downsampling_factor,
                                       autoencoder.config.in_channels)
    means, stds = encode_posteriors(autoencoder, train_data, fabric.device)
    schedule = teacher.schedule
    # the teacher's ODE grid: the lcm spacing's N levels, then σ_min (timestep 0)
    grid = torch.cat([sigma_grid(schedule, cfg.num_intervals, "lcm",
                                 original_steps=cfg.num_intervals)[:-1], schedule.sigmas[:1]])
    student_cfg = StudentConfig(sigma_min=float(schedule.sigmas[0]),
                                boundary_width=cfg.boundary_width,
                                original_steps=cfg.num_intervals, steps=cfg.steps,
                                guidance_scale=cfg.guidance_scale if guided else 1.0,
                                guidance_min=cfg.guidance_min if guided else 1.0,
                                guidance_max=cfg.guidance_max if guided else 1.0)
    unet = seeded(tc.seed, lambda: student_unet(teacher.unet, guided, lora).train())
    ema, target = EMA(unet, cfg.ema_decay), EMA(unet, cfg.target_decay)
    optimizer = make_optimizer([p for p in unet.parameters() if p.requires_grad], tc)
    parts = {"unet": unet, "unet_ema": ema.model, "unet_target": target.model}
    if lora is not None:  # an adapter student stores its adapters, the rest is the teacher's
        parts = {k: AdapterView(v, STUDENT_KEPT) for k, v in parts.items()}
    start = 0
    if stored is not None:
        if stored.get("student_config") is None or stored.get("method") != method_name:
            raise UserError(f"{run.checkpoint} is not a {method_name} distillation run; choose "
                            "another train.out_dir")
        check_same(_fixed(stored["config"]), _fixed(to_dict(cfg)), "the distillation config",
                   run.checkpoint)
        start = resume_state(run.checkpoint, stored, LATENT_DIFFUSION, parts,
                             {"optimizer": optimizer})
        ema.num_updates = target.num_updates = int(stored["train_state"]["ema_updates"])
    model, optimizer = fabric.setup(unet, optimizer)
    ema.model.to(fabric.device)
    target.model.to(fabric.device)
    precond = make_preconditioning(schedule, teacher.prediction, teacher.sigma_data)
    boundary = Boundary.of(student_cfg)
    student = ConsistencyDenoiser(Denoiser(model, precond), boundary)
    target_f = ConsistencyDenoiser(Denoiser(target.model, precond), boundary)
    student_system = dataclasses.replace(teacher, unet=ema.model, student=student_cfg)
    latent_size = (teacher.image_size // codec.downsampling_factor,) * 2
    conditioner = teacher.conditioner
    cached = conditioner.dataset_conditions(train_data) if conditioner else None
    # a full student is a complete checkpoint; an adapter student names its teacher instead
    shared = {} if lora is not None else prefixed("autoencoder.", autoencoder.state_dict())
    if lora is None and conditioner is not None and conditioner.has_weights:
        shared.update({k: v for p in ("conditioner.", "conditioner_ema.")
                       for k, v in prefixed(p, conditioner.state_dict()).items()})
    extra = {"method": method_name, "teacher": _teacher_reference(cfg.teacher),
             **({} if lora is None else {"lora_config": to_dict(lora)})}

    def save(step: int) -> None:
        tensors = {k: v for prefix, part in parts.items()
                   for k, v in prefixed(f"{prefix}.", part.state_dict()).items()}
        run.save({**tensors, **shared}, {"optimizer": optimizer},
                 {**system_metadata(student_system), "config": to_dict(cfg), **extra,
                  **train_state(step, fabric, ema_updates=ema.num_updates)})

    run.open(cfg, start)
    with run.signals, training_progress(start, tc.max_steps, "distill", fabric) as progress:
        run.start_clock()
        for step in range(start, tc.max_steps):
            generator = step_generator(tc.seed, step)
            index = batch_indices(len(train_data), tc.batch_size, step, tc.seed)
            shape = (tc.batch_size, *means.shape[1:])
            posterior_noise = torch.randn(shape, generator=generator)
            noise = torch.randn(shape, generator=generator)
            n = torch.randint(0, cfg.num_intervals, (tc.batch_size,), generator=generator)
            scale = cfg.guidance_min + (cfg.guidance_max - cfg.guidance_min) * torch.rand(
                tc.batch_size, generator=generator)
            index, posterior_noise, noise, n, scale = (
                rank_slice(v, fabric.global_rank, fabric.world_size)
                for v in (index, posterior_noise, noise, n, scale))
            z0 = codec.normalize(means[index] + stds[index] * posterior_noise).to(fabric.device)
            cond = batch_condition(conditioner, train_data, index, generator, codec, latent_size,
                                   teacher.unet.config.num_classes, 0.0, cached)
            with torch.no_grad():
                cond = _encoded(teacher, cond.to(fabric.device))
                uncond = null_condition(teacher, cond, None, len(z0)) if guided else None
            scale = scale.to(fabric.device)
            if guided:
                cond = dataclasses.replace(cond, guidance=scale)
            loss = consistency_distillation_loss(
                student, target_f, teacher.denoiser, z0, noise.to(fabric.device),
                grid[n].to(fabric.device), grid[n + 1].to(fabric.device), cond, uncond, scale,
                cfg.huber_c).mean()
            check_finite(loss, step)
            optimizer_step(fabric, model, optimizer, loss, tc, step)
            ema.update(unet)
            target.update(unet)
            done = step + 1
            progress.update()
            out_of_time, stopping = run.should_stop(tc.max_minutes)
            last = done == tc.max_steps or out_of_time
            if due(done, tc.log_every, last or stopping):
                value = mean_over_processes(fabric, loss)
                run.log(done, loss=value, lr=optimizer.param_groups[0]["lr"])
                progress.set_postfix(loss=f"{value:.4f}", refresh=False)
            if due(done, tc.sample_every, last) and fabric.is_global_zero:
                _write_samples(run, student_system, train_data, done)
            if due(done, tc.checkpoint_every, last or stopping):
                save(done)
            if stopping and not last:
                raise run.interrupted(done)
            if last:
                break
    return run.checkpoint


def _write_samples(run: Run, system: LatentDiffusion, data: ImageData, step: int) -> None:
    """A preview grid of the student (its EMA weights, its default steps and guidance): one row per
    training condition (the first 8 training images'), or per class, or 8 columns."""
    options, n = {}, 64
    if system.conditioner is not None:
        options = preview_conditions(system, data, torch.arange(8).repeat_interleave(8))
    elif system.num_classes:
        options = {"class_labels": class_grid_labels(system.num_classes, 8)}
        n = len(options["class_labels"])
    images = generate(system, seeds=list(range(n)), **options)
    save_image_grid(to_uint8(images), run.sample_path(step), ncols=8)
