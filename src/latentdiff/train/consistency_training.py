"""Consistency training without a teacher in the loss: `latentdiff distill ect|ict TEACHER`.

ect (easy consistency tuning, Geng et al. 2025): the student starts from the diffusion model and
the pair of levels tightens along a curriculum: σ ~ lognormal(−1.1, 2.0) truncated to the levels the
student samples at (from the lcm grid's lowest to σ_max), σ' = σ·(1 − n(σ)/2^a) at
stage a of `ct_stages` (stage 0 is the diffusion loss itself), λ = 1/(σ − σ'). ict (improved
consistency training, Song & Dhariwal 2024): the student starts from random weights of the
teacher's architecture; adjacent levels of a Karras grid whose size doubles along the run (10 …
1280 intervals), drawn by a discrete lognormal. Both use the online weights as the target
(θ⁻ = sg[θ]), the pseudo-Huber metric and the consistency boundary at the schedule's σ_min; the
"teacher" checkpoint gives the first stage, the conditioner and the data (its UNet only ect's
start). The students are unguided (no teacher, so no guidance to fold in): sample them at s = 1.
"""

import dataclasses
from pathlib import Path

import torch
from lightning_fabric import Fabric

from latentdiff.checkpoints.io import prefixed
from latentdiff.checkpoints.models import LATENT_DIFFUSION, student_unet, system_metadata
from latentdiff.config import DistillConfig, StudentConfig, to_dict
from latentdiff.consistency import Boundary, ConsistencyDenoiser
from latentdiff.denoiser import Denoiser
from latentdiff.distillation import (consistency_training_loss, ect_next_sigma, ict_grid,
                                     lognormal_index, truncated_lognormal)
from latentdiff.errors import UserError
from latentdiff.preconditioning import make_preconditioning
from latentdiff.samplers import sigma_grid
from latentdiff.train.ema import EMA
from latentdiff.train.engine import (Run, make_optimizer, resume_state, seeded, train_state,
                                     training_loop)
from latentdiff.train.students import (TeacherData, check_resumable, teacher_reference,
                                       write_preview)
from latentdiff.network import build_network

P_MEAN, P_STD = -1.1, 2.0  # ECT's and iCT's lognormal noise distribution


def train_consistency(fabric: Fabric, cfg: DistillConfig, from_scratch: bool, resume: bool) -> Path:
    tc = cfg.train
    method = "ict" if from_scratch else "ect"
    if cfg.guidance_max > 1.0:
        raise UserError(f"{method} trains without a teacher, so it cannot fold in guidance; keep "
                        "guidance_max=1 (lcd or guided distil a guided teacher)")
    run = Run(Path(tc.out_dir), fabric, tc.keep_checkpoints)
    stored = run.start(resume)
    source = TeacherData.of(cfg, fabric.device)
    teacher = source.teacher
    schedule = teacher.schedule
    sigma_min, sigma_max = float(schedule.sigmas[0]), float(schedule.sigmas[-1])
    # ect's σ: not below the lowest level the student samples at (the lcm grid's last), where
    # the sharp boundary's c_out ≈ 1; nearer σ_min, c_out/(σ − σ') → 1/b would swamp the gradient
    sigma_lo = float(sigma_grid(schedule, cfg.num_intervals, "lcm",
                                original_steps=cfg.num_intervals)[-2])
    student_cfg = StudentConfig(sigma_min=sigma_min, boundary_width=cfg.boundary_width,
                                original_steps=cfg.num_intervals, steps=cfg.steps)
    unet = seeded(tc.seed, lambda: (build_network(teacher.unet.config) if from_scratch
                                    else student_unet(teacher.unet, False)).train())
    ema = EMA(unet, cfg.ema_decay)
    optimizer = make_optimizer(unet.parameters(), tc)
    start = 0
    if stored is not None:
        check_resumable(run, stored, cfg, method, keep_steps=True)
        start = resume_state(run.checkpoint, stored, LATENT_DIFFUSION,
                             {"unet": unet, "unet_ema": ema.model}, {"optimizer": optimizer})
        ema.num_updates = int(stored["train_state"]["ema_updates"])
    model, optimizer = fabric.setup(unet, optimizer)
    ema.model.to(fabric.device)
    precond = make_preconditioning(schedule, teacher.prediction, teacher.sigma_data)
    boundary = Boundary.of(student_cfg)
    student = ConsistencyDenoiser(Denoiser(model, precond), boundary)
    target = ConsistencyDenoiser(Denoiser(unet, precond), boundary)  # θ⁻ = sg[θ]: no_grad there
    system = dataclasses.replace(teacher, unet=ema.model, student=student_cfg)
    shared = source.shared_tensors(None)

    def save(step: int) -> None:
        tensors = {**prefixed("unet.", unet.state_dict()),
                   **prefixed("unet_ema.", ema.model.state_dict())}
        run.save({**tensors, **shared}, {"optimizer": optimizer},
                 {**system_metadata(system), "config": to_dict(cfg), "method": method,
                  "teacher": teacher_reference(cfg.teacher),
                  **train_state(step, fabric, ema_updates=ema.num_updates)})

    def levels(step: int, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(σ, σ') (B,) of this step's pairs."""
        if from_scratch:
            grid = ict_grid(sigma_min, sigma_max, step, tc.max_steps).to(u.device)
            i = lognormal_index(grid, u, P_MEAN, P_STD)
            return grid[i + 1].float(), grid[i].float()
        sigma = truncated_lognormal(u, sigma_lo, sigma_max, P_MEAN, P_STD)
        stage = step * cfg.ct_stages // tc.max_steps
        return sigma, ect_next_sigma(sigma, stage, sigma_min)

    def loss_of(step: int) -> torch.Tensor:
        b = source.batch(cfg, step, fabric)
        sigma, sigma_next = levels(step, b.u)
        return consistency_training_loss(student, target, b.z0, b.noise, sigma, sigma_next,
                                         b.cond, cfg.huber_c).mean()

    run.open(cfg, start)
    training_loop(run, fabric, tc, start, "distill", loss_of, model, optimizer,
                  lambda step: ema.update(unet), save,
                  lambda done: write_preview(run, system, source.data, done))
    return run.checkpoint
