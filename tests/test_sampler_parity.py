"""Parity with diffusers' schedulers: the same network outputs and schedule, the same trajectory
to ≤ 1e-5 (relative) at every step. The option settings that make the two equivalent are in
docs/samplers.md (a table) and here.

The network is a smooth, nonlinear ε-model net(z_t, t) on a Stable-Diffusion schedule; diffusers is
driven with its own set_timesteps / scale_model_input / step loop, latentdiff with the σ grid of the
same timesteps.
"""

import pytest
import torch

from latentdiff.config import NoiseScheduleConfig
from latentdiff.consistency import ConsistencyDenoiser, LCMBoundary
from latentdiff.denoiser import Denoiser
from latentdiff.samplers.diffusers_peers import PEERS
from latentdiff.noise import NoiseSchedule
from latentdiff.preconditioning import EpsPrediction, VPrediction
from latentdiff.samplers import SAMPLERS, sigma_grid

diffusers = pytest.importorskip("diffusers")

SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
            "beta_schedule": "scaled_linear",
            "prediction_type": "epsilon"}


def net(z: torch.Tensor, t, **_) -> torch.Tensor:
    """A fixed smooth ε-model: nonlinear in z, varying with t."""
    t = torch.as_tensor(t, dtype=z.dtype).reshape(-1, *[1] * (z.ndim - 1))
    return 0.9 * torch.tanh(1.3 * z + 0.2) + 0.1 * torch.sin(t / 150.0) * z


class Net(torch.nn.Module):
    def forward(self, z, t, **_):
        return net(z, t)


CASES = PEERS  # every settings pair of samplers/diffusers_peers.py


def diffusers_run(name: str, steps: int, z_T: torch.Tensor, seed: int) -> list[torch.Tensor]:
    """diffusers' samples after each completed step (Heun: after its second stage; PLMS: not its
    Euler stage)."""
    cls = CASES[name].scheduler
    scheduler = getattr(diffusers, cls)(**SCHEDULE, **CASES[name].scheduler_options)
    scheduler.set_timesteps(steps)
    generator = torch.Generator().manual_seed(seed)
    sample, out = z_T.clone(), []
    for k, t in enumerate(scheduler.timesteps):
        eps = net(scheduler.scale_model_input(sample, t), t)
        kwargs = {"generator": generator} if "generator" in scheduler.step.__code__.co_varnames else {}
        sample = scheduler.step(eps, t, sample, **kwargs).prev_sample
        if (cls == "HeunDiscreteScheduler" and not scheduler.state_in_first_order
                and k < len(scheduler.timesteps) - 1):
            continue  # the Euler stage of a Heun step
        if cls == "PNDMScheduler" and k == 0:
            continue  # PLMS' first call is the Euler stage of its improved-Euler start
        out.append(sample)
    return out


def our_run(name: str, steps: int, z_T: torch.Tensor, seed: int) -> list[torch.Tensor]:
    case = CASES[name]
    vp = case.vp
    schedule = NoiseSchedule(NoiseScheduleConfig(kind="scaled_linear",
                                                 beta_start=0.00085, beta_end=0.012))
    denoiser = Denoiser(Net(), EpsPrediction(schedule))
    if case.consistency:
        denoiser = ConsistencyDenoiser(denoiser, LCMBoundary(schedule))
    sigmas = sigma_grid(schedule, steps, case.spacing, final=case.final)
    trajectory = []

    def keep(info):
        sigma_next = sigmas[info["i"] + 1]
        trajectory.append(info["x"] / (1 + sigma_next ** 2).sqrt() if vp else info["x"])

    x_T = z_T * (1 + sigmas[0] ** 2).sqrt() if vp else z_T
    SAMPLERS[case.sampler].function(denoiser, x_T, sigmas,
                                    generator=torch.Generator().manual_seed(seed),
                                    callback=keep, **case.options)
    return trajectory


@pytest.mark.parametrize("steps", [10, 25])
@pytest.mark.parametrize("name", list(CASES))
def test_trajectories_match_diffusers_at_every_step(name, steps):
    case = CASES[name]
    z_T = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    # diffusers' σ-space schedulers start from x_T = z_T·√(σ_max² + 1) for these spacings
    if not case.vp:
        scheduler = getattr(diffusers, case.scheduler)(**SCHEDULE, **case.scheduler_options)
        scheduler.set_timesteps(steps)
        z_T = z_T * scheduler.init_noise_sigma
    theirs, ours = diffusers_run(name, steps, z_T, seed=5), our_run(name, steps, z_T, seed=5)
    assert len(theirs) == len(ours) == steps
    # diffusers 0.42 returns NaN on bh1's final step to σ = 0 (B(h) = h = −∞ times 0)
    if name == "unipc_bh1":
        theirs, ours = theirs[:-1], ours[:-1]
    for i, (a, b) in enumerate(zip(ours, theirs)):
        error = ((a - b).abs().max() / b.abs().max()).item()
        assert error <= 1e-5, f"{name}, step {i}: relative error {error:.2e}"


def test_zero_terminal_snr_ddim_matches_diffusers():
    """Lin et al. 2024: rescaled β, v-prediction, trailing spacing. diffusers' ᾱ_T is exactly 0,
    ours is 4.9e-8 (σ_T finite in the VE view), which moves x̂_0 of the first step by
    √ᾱ_T·z_T ≈ 2e-4 relative."""
    steps, z_T = 10, torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    options = {**SCHEDULE, "prediction_type": "v_prediction"}
    scheduler = diffusers.DDIMScheduler(**options, rescale_betas_zero_snr=True,
                                        timestep_spacing="trailing",
                                        set_alpha_to_one=True, clip_sample=False)
    scheduler.set_timesteps(steps)
    theirs = z_T.clone()
    for t in scheduler.timesteps:
        theirs = scheduler.step(net(theirs, t), t, theirs).prev_sample
    schedule = NoiseSchedule(NoiseScheduleConfig(kind="scaled_linear",
                                                 beta_start=0.00085, beta_end=0.012,
                                                 zero_terminal_snr=True))
    sigmas = sigma_grid(schedule, steps, "trailing")
    assert sigmas[0] > 4000
    ours = SAMPLERS["ddim"].function(Denoiser(Net(), VPrediction(schedule)),
                                     z_T * (1 + sigmas[0] ** 2).sqrt(), sigmas)
    assert ((ours - theirs).abs().max() / theirs.abs().max()).item() < 1e-3


def test_lcm_boundary_matches_diffusers_near_timestep_zero():
    """LCM's boundary acts only near t = 0 (c_skip = 0.25/((10t)² + 0.25)); custom timesteps down
    to t = 1 make its scalings visible beyond the tolerance (t = 1: c_skip ≈ 2.5e-3)."""
    ts = [999, 259, 19, 4, 1]
    z_T = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    scheduler = diffusers.LCMScheduler(**SCHEDULE, **PEERS["lcm"].scheduler_options)
    scheduler.set_timesteps(timesteps=ts)
    generator, theirs = torch.Generator().manual_seed(3), z_T.clone()
    for t in scheduler.timesteps:
        theirs = scheduler.step(net(theirs, t), t, theirs, generator=generator).prev_sample
    schedule = NoiseSchedule(NoiseScheduleConfig(kind="scaled_linear",
                                                 beta_start=0.00085, beta_end=0.012))
    sigmas = torch.cat([schedule.sigmas[ts], torch.zeros(1)])
    ours = SAMPLERS["consistency"].function(
        ConsistencyDenoiser(Denoiser(Net(), EpsPrediction(schedule)), LCMBoundary(schedule)),
        z_T * (1 + sigmas[0] ** 2).sqrt(), sigmas, generator=torch.Generator().manual_seed(3))
    assert ((ours - theirs).abs().max() / theirs.abs().max()).item() <= 1e-5
