"""Progressive and guided distillation: `latentdiff distill progressive|guided TEACHER`.

Progressive distillation (Salimans & Ho 2022): stage k trains a DDIM student of N/2^k steps to do in
one step what its teacher, the student of stage k − 1 (first: the teacher itself), does in two
(`distillation.progressive_distillation_loss`); after H stages N/2^H steps remain. Guided
distillation (Meng et al. 2023) first distils the classifier-free-guided teacher into one student
that takes the scale s as an input (`guidance_distillation_loss`, N steps), then halves its steps
the same way with s as an input throughout; the student then costs one network evaluation per step
at any s in [guidance_min, guidance_max].

Grids: the trailing spacing with N/2^k steps (t = T − 1 − j·T/n), whose levels at N/2^k are every
other level at N/2^(k−1), so the teacher's two steps span exactly the student's one. Each stage is
train.max_steps / stages steps; the stage's teacher (a frozen copy of the previous stage's EMA
student) is saved in the checkpoint (`unet_stage.`), so a run resumes exactly inside any stage.
"""

import copy
import dataclasses
from pathlib import Path

import torch
from lightning_fabric import Fabric

from latentdiff.checkpoints.io import prefixed, read_tensors
from latentdiff.checkpoints.models import LATENT_DIFFUSION, student_unet, system_metadata
from latentdiff.config import DistillConfig, StudentConfig, to_dict
from latentdiff.denoiser import Denoiser
from latentdiff.distillation import guidance_distillation_loss, progressive_distillation_loss
from latentdiff.errors import UserError
from latentdiff.preconditioning import make_preconditioning
from latentdiff.samplers import sigma_grid
from latentdiff.train.ema import EMA
from latentdiff.train.engine import (Run, make_optimizer, resume_state, seeded, train_state,
                                     training_loop)
from latentdiff.train.students import (TeacherData, check_resumable, teacher_reference,
                                       write_preview)
from latentdiff.network import build_network


def stage_steps(cfg: DistillConfig, guided: bool) -> tuple[int, int]:
    """(stages, steps per stage); one-line errors for a grid that cannot be halved H times or a
    run too short for its stages."""
    if cfg.num_intervals % 2 ** cfg.halvings:
        raise UserError(f"num_intervals={cfg.num_intervals} cannot be halved {cfg.halvings} times; "
                        f"use a multiple of {2 ** cfg.halvings}, e.g. num_intervals=64")
    stages = cfg.halvings + (1 if guided else 0)
    if cfg.train.max_steps % stages:
        raise UserError(f"train.max_steps={cfg.train.max_steps} must split into {stages} equal "
                        f"stages; use a multiple of {stages}")
    return stages, cfg.train.max_steps // stages


def distill_progressive(fabric: Fabric, cfg: DistillConfig, guided_method: bool,
                        resume: bool) -> Path:
    tc = cfg.train
    method = "guided" if guided_method else "progressive"
    stages, per_stage = stage_steps(cfg, guided_method)
    run = Run(Path(tc.out_dir), fabric, tc.keep_checkpoints)
    stored = run.start(resume)
    source = TeacherData.of(cfg, fabric.device)
    teacher, guided = source.teacher, source.guided
    if guided_method != guided:
        raise UserError("guided distillation needs a teacher trained with condition dropout and "
                        "guidance_max > 1; progressive distils the unguided model (keep "
                        "guidance_max=1, or use guided)")
    first_halving = 1 if guided_method else 0  # the stage index of the first halving

    def student_steps(stage: int) -> int:
        """The DDIM steps the student of `stage` is trained for."""
        return cfg.num_intervals // 2 ** max(0, stage - first_halving + 1)

    def student_config(stage: int) -> StudentConfig:
        return StudentConfig(consistency=False, sampler="ddim", spacing="trailing",
                             steps=student_steps(stage), original_steps=cfg.num_intervals,
                             guidance_scale=cfg.guidance_scale if guided else 1.0,
                             guidance_min=cfg.guidance_min if guided else 1.0,
                             guidance_max=cfg.guidance_max if guided else 1.0)

    unet = seeded(tc.seed, lambda: student_unet(teacher.unet, guided).train())
    ema = EMA(unet, cfg.ema_decay)
    optimizer = make_optimizer(unet.parameters(), tc)
    start, stage_teacher = 0, None
    if stored is not None:
        check_resumable(run, stored, cfg, method, keep_steps=True)
        start = resume_state(run.checkpoint, stored, LATENT_DIFFUSION,
                             {"unet": unet, "unet_ema": ema.model}, {"optimizer": optimizer})
        ema.num_updates = int(stored["train_state"]["ema_updates"])
        if read_tensors(run.checkpoint, "unet_stage."):
            stage_teacher = build_network(unet.config)
            stage_teacher.load_state_dict(read_tensors(run.checkpoint, "unet_stage."))
            stage_teacher = stage_teacher.eval().requires_grad_(False).to(fabric.device)
    model, optimizer = fabric.setup(unet, optimizer)
    ema.model.to(fabric.device)
    precond = make_preconditioning(teacher.schedule, teacher.prediction, teacher.sigma_data)
    student = Denoiser(model, precond)
    system = dataclasses.replace(teacher, unet=ema.model,
                                 student=student_config(min(start // per_stage, stages - 1)))
    shared = source.shared_tensors(None)
    # the trailing grids of every stage, made once: σ levels of N (guidance stage) and 2·steps
    grids = {n: sigma_grid(teacher.schedule, n, "trailing").to(fabric.device)
             for n in {cfg.num_intervals, *(2 * student_steps(k) for k in range(stages))}}

    def save(step: int) -> None:
        system.student = student_config(min(max(step - 1, 0) // per_stage, stages - 1))
        tensors = {**prefixed("unet.", unet.state_dict()),
                   **prefixed("unet_ema.", ema.model.state_dict()),
                   **({} if stage_teacher is None
                      else prefixed("unet_stage.", stage_teacher.state_dict()))}
        run.save({**tensors, **shared}, {"optimizer": optimizer},
                 {**system_metadata(system), "config": to_dict(cfg), "method": method,
                  "teacher": teacher_reference(cfg.teacher),
                  **train_state(step, fabric, ema_updates=ema.num_updates)})

    def loss_of(step: int) -> torch.Tensor:
        nonlocal stage_teacher
        stage = step // per_stage
        if step % per_stage == 0 and step > 0:  # the previous stage's student teaches
            stage_teacher = copy.deepcopy(ema.model).eval().requires_grad_(False)
        system.student = student_config(stage)
        b = source.batch(cfg, step, fabric)
        if stage < first_halving:  # the guided teacher into an N-step student that takes s
            grid = grids[cfg.num_intervals][:-1]
            sigma = grid[(b.u * len(grid)).long().clamp(max=len(grid) - 1)]
            return guidance_distillation_loss(student, teacher.denoiser, b.z0, b.noise, sigma,
                                              b.cond, b.uncond, b.scale).mean()
        steps = student_steps(stage)
        fine = grids[2 * steps]
        j = (b.u * steps).long().clamp(max=steps - 1)
        if stage_teacher is None:  # the first halving of progressive: the teacher itself
            teach = teacher.denoiser
        else:
            teach = Denoiser(stage_teacher, precond)
        return progressive_distillation_loss(student, teach, b.z0, b.noise, fine[2 * j],
                                             fine[2 * j + 1], fine[2 * j + 2], b.cond).mean()

    run.open(cfg, start)
    training_loop(run, fabric, tc, start, "distill", loss_of, model, optimizer,
                  lambda step: ema.update(unet), save,
                  lambda done: write_preview(run, system, source.data, done))
    return run.checkpoint
