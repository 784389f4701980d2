"""Few-step students from a trained teacher: `latentdiff distill METHOD TEACHER`.

lcd: latent consistency distillation (`distillation.py`; Luo et al. 2023), the student a copy of
the teacher's UNet; lcd-lora: the same with low-rank adapters (`nn/lora.py`), the checkpoint then
holds only the adapters and names its teacher; progressive and guided: `progressive.py`; ect and
ict (consistency training): `consistency_training.py`. The run
folder, checkpoints, resume, stop signals, logs and previews are the engine's (`engine.py`); a
student's checkpoint is a latent-diffusion checkpoint with a `student_config`, so `latentdiff sample
STUDENT` and `eval` use it directly (multistep consistency sampling, `steps` steps).
"""

import dataclasses
from pathlib import Path

import torch
from lightning_fabric import Fabric

from latentdiff.checkpoints.io import prefixed
from latentdiff.checkpoints.models import (LATENT_DIFFUSION, STUDENT_KEPT, student_unet,
                                           system_metadata)
from latentdiff.config import DistillConfig, LoRAConfig, StudentConfig, to_dict
from latentdiff.consistency import Boundary, ConsistencyDenoiser
from latentdiff.denoiser import Denoiser
from latentdiff.distillation import consistency_distillation_loss
from latentdiff.errors import UserError
from latentdiff.nn.lora import AdapterView
from latentdiff.preconditioning import make_preconditioning
from latentdiff.samplers import sigma_grid
from latentdiff.train.ema import EMA
from latentdiff.train.engine import (Run, make_fabric, make_optimizer, resume_state, seeded,
                                     train_state, training_loop)
from latentdiff.train.students import (TeacherData, check_resumable, resolved, teacher_reference,
                                       write_preview)

METHODS = {"lcd": "latent consistency distillation, the guidance scale as an input (LCM)",
           "lcd-lora": "the same with low-rank adapters on the teacher's weights (LCM-LoRA)",
           "progressive": "progressive distillation: halve the DDIM steps, stage by stage "
                          "(Salimans & Ho 2022)",
           "guided": "guided distillation: the guided teacher into one student with s as an "
                     "input, then progressive halving (Meng et al. 2023)",
           "ect": "easy consistency tuning: consistency training started from the teacher "
                  "(Geng et al. 2025)",
           "ict": "improved consistency training from random weights (Song & Dhariwal 2024)"}


def distill(cfg: DistillConfig, method: str = "lcd", resume: bool = False) -> Path:
    """Distil (or continue with resume=True) and return the path of the student's checkpoint."""
    if method not in METHODS:
        raise UserError(f"unknown distillation method {method!r}; choose one of "
                        f"{', '.join(METHODS)}")
    cfg = resolved(cfg)
    fabric = make_fabric(cfg.train)
    if method in ("progressive", "guided"):
        from latentdiff.train.progressive import distill_progressive

        return fabric.launch(distill_progressive, cfg, method == "guided", resume)
    if method in ("ect", "ict"):
        from latentdiff.train.consistency_training import train_consistency

        return fabric.launch(train_consistency, cfg, method == "ict", resume)
    lora = None
    if method == "lcd-lora":
        lora = LoRAConfig(cfg.lora_rank, cfg.lora_alpha or float(cfg.lora_rank))
    return fabric.launch(_distill, cfg, lora, resume)


def _distill(fabric: Fabric, cfg: DistillConfig, lora: LoRAConfig | None, resume: bool) -> Path:
    tc = cfg.train
    method = "lcd" if lora is None else "lcd-lora"
    run = Run(Path(tc.out_dir), fabric, tc.keep_checkpoints)
    stored = run.start(resume)
    source = TeacherData.of(cfg, fabric.device)
    teacher, guided = source.teacher, source.guided
    schedule = teacher.schedule
    # the teacher's ODE grid: the lcm spacing's N levels, then σ_min (timestep 0)
    grid = torch.cat([sigma_grid(schedule, cfg.num_intervals, "lcm",
                                 original_steps=cfg.num_intervals)[:-1],
                      schedule.sigmas[:1]]).to(fabric.device)
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
        check_resumable(run, stored, cfg, method)
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
    shared = source.shared_tensors(lora)
    extra = {"method": method, "teacher": teacher_reference(cfg.teacher),
             **({} if lora is None else {"lora_config": to_dict(lora)})}

    def save(step: int) -> None:
        tensors = {k: v for prefix, part in parts.items()
                   for k, v in prefixed(f"{prefix}.", part.state_dict()).items()}
        run.save({**tensors, **shared}, {"optimizer": optimizer},
                 {**system_metadata(student_system), "config": to_dict(cfg), **extra,
                  **train_state(step, fabric, ema_updates=ema.num_updates)})

    def loss_of(step: int) -> torch.Tensor:
        b = source.batch(cfg, step, fabric)
        n = (b.u * cfg.num_intervals).long().clamp(max=cfg.num_intervals - 1)
        return consistency_distillation_loss(student, target_f, teacher.denoiser, b.z0, b.noise,
                                             grid[n], grid[n + 1], b.cond, b.uncond, b.scale,
                                             cfg.huber_c).mean()

    def after_step(step: int) -> None:
        ema.update(unet)
        target.update(unet)

    run.open(cfg, start)
    training_loop(run, fabric, tc, start, "distill", loss_of, model, optimizer, after_step,
                  save, lambda done: write_preview(run, student_system, source.data, done))
    return run.checkpoint
