"""The training loss is λ(σ)·‖D(x0 + σn; σ) − x0‖² on the sampling denoiser; with λ = 1/c_out² it is
the MSE of the network's own output against ε, x0 or v (DDPM's L_simple and its x0/v forms)."""

import math

import pytest
import torch
from torch import nn

from latentdiff.config import NoiseScheduleConfig, ObjectiveConfig
from latentdiff.denoiser import Denoiser
from latentdiff.noise import NoiseSchedule
from latentdiff.objectives import ddpm_loss, denoising_loss, draw_sigmas, normal_parameters
from latentdiff.samplers.karras import sample_euler
from latentdiff.preconditioning import (EDMPreconditioning, FlowPrediction, append_dims,
                                        effective_target, make_preconditioning)
from latentdiff.weighting import (LearnedLogVariance, edm_weight, loss_weight, min_snr_weight,
                                  soft_min_snr_weight, with_learned_variance)


class Net(nn.Module):
    """Any function of (z_t, t): a fixed random conv plus a t term."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, z_t, t, class_labels=None, context=None):
        return self.conv(z_t) + torch.sin(t.float() / 100).reshape(-1, 1, 1, 1)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_ddpm_loss_is_the_network_output_mse(prediction):
    torch.manual_seed(0)
    schedule, net = NoiseSchedule(NoiseScheduleConfig()), Net()
    x0, noise, t = torch.randn(6, 3, 5, 5), torch.randn(6, 3, 5, 5), torch.tensor([0, 1, 10, 300, 700, 999])
    a = schedule.alphas_cumprod[t].reshape(-1, 1, 1, 1)
    z_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    target = {"eps": noise, "x0": x0, "v": a.sqrt() * noise - (1 - a).sqrt() * x0}[prediction]
    expected = (net(z_t, t) - target).pow(2).flatten(1).mean(1)
    loss = ddpm_loss(Denoiser(net, make_preconditioning(schedule, prediction)), x0, t, noise)
    torch.testing.assert_close(loss, expected, rtol=2e-4, atol=1e-6)


SIGMAS = torch.tensor([0.01, 0.1, 0.5, 1.0, 3.0, 20.0])
PREDICTIONS = ["eps", "x0", "v", "edm", "flow"]


class Oracle(nn.Module):
    """The exact network for one known batch: F = (x0 − c_skip·x)/c_out, so that D(x; σ) = x0."""

    def __init__(self, precond, x0, sigma):
        super().__init__()
        self.precond, self.x0, self.sigma = precond, x0, sigma

    def forward(self, u, c_noise, class_labels=None, context=None):
        x = u / append_dims(self.precond.c_in(self.sigma), u)
        return effective_target(self.precond, self.x0, x, self.sigma)


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("weighting", ["uniform", "min_snr", "soft_min_snr", "edm"])
def test_every_objective_is_zero_for_the_exact_denoiser(prediction, weighting):
    precond = make_preconditioning(NoiseSchedule(NoiseScheduleConfig()), prediction, 0.5)
    x0, noise = torch.randn(6, 3, 4, 4), torch.randn(6, 3, 4, 4)
    denoiser = Denoiser(Oracle(precond, x0, SIGMAS), precond)
    weight = loss_weight(ObjectiveConfig(weighting=weighting), SIGMAS, 0.5)
    loss = denoising_loss(denoiser, x0, SIGMAS, noise, weight=weight)
    assert loss.abs().max().item() < 1e-8
    wrong = Denoiser(Oracle(precond, x0 + 0.1, SIGMAS), precond)
    assert (denoising_loss(wrong, x0, SIGMAS, noise, weight=weight) > 1e-6).all()


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_min_snr_is_the_papers_weight_on_each_target(prediction):
    """Hang et al. 2023, Eq. 7–9: min(SNR, γ)/SNR on ‖ε̂ − ε‖², min(SNR, γ) on ‖x̂₀ − x0‖²,
    min(SNR, γ)/(SNR + 1) on ‖v̂ − v‖² (SNR = ᾱ/(1 − ᾱ) = 1/σ²)."""
    schedule, net = NoiseSchedule(NoiseScheduleConfig()), Net()
    x0, noise = torch.randn(6, 3, 5, 5), torch.randn(6, 3, 5, 5)
    t = torch.tensor([0, 5, 100, 400, 700, 999])
    sigma = schedule.sigmas[t]
    snr = sigma ** -2
    plain = ddpm_loss(Denoiser(net, make_preconditioning(schedule, prediction)), x0, t, noise)
    factor = {"eps": 1 / snr, "x0": torch.ones_like(snr), "v": 1 / (snr + 1)}[prediction]
    expected = snr.clamp(max=5.0) * factor * plain
    weighted = denoising_loss(Denoiser(net, make_preconditioning(schedule, prediction)), x0, sigma,
                              noise, weight=min_snr_weight(sigma, 5.0))
    torch.testing.assert_close(weighted, expected, rtol=2e-4, atol=1e-7)


def test_weighting_formulas():
    s = torch.tensor([0.05, 0.5, 1.0, 4.0])
    snr = 1 / s ** 2
    torch.testing.assert_close(min_snr_weight(s, 5.0), torch.minimum(snr, torch.tensor(5.0)))
    torch.testing.assert_close(soft_min_snr_weight(s, 5.0), snr * 5 / (snr + 5))
    edm = EDMPreconditioning(0.5)
    torch.testing.assert_close(edm_weight(s, 0.5), 1 / edm.c_out(s) ** 2)
    assert loss_weight(ObjectiveConfig(), s, 1.0) is None


def test_flow_preconditioning_is_the_rectified_flow():
    """c_in·x is x_t = (1 − t)·x0 + t·ε at t = σ/(1 + σ), the effective target the velocity ε − x0,
    and the time input 1000·t."""
    x0, eps = torch.randn(5, 2, 3, 3), torch.randn(5, 2, 3, 3)
    t = torch.tensor([0.01, 0.2, 0.5, 0.9, 0.999])
    sigma = t / (1 - t)
    x, precond = x0 + append_dims(sigma, x0) * eps, FlowPrediction()
    tt = append_dims(t, x0)
    torch.testing.assert_close(append_dims(precond.c_in(sigma), x) * x, (1 - tt) * x0 + tt * eps,
                               rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(effective_target(precond, x0, x, sigma), eps - x0,
                               rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(precond.c_noise(sigma), 1000 * t)


def test_sigma_samplers():
    schedule, g = NoiseSchedule(NoiseScheduleConfig()), torch.Generator().manual_seed(0)
    uniform = draw_sigmas(ObjectiveConfig(), schedule, 1.0, 1000, g)
    assert set(uniform.tolist()) <= set(schedule.sigmas.tolist())
    log = draw_sigmas(ObjectiveConfig(sigma_sampler="lognormal", mean=-1.2, std=1.2), schedule, 1.0,
                      200_000, g).log()
    assert log.mean().item() == pytest.approx(-1.2, abs=0.01)
    assert log.std().item() == pytest.approx(1.2, abs=0.01)
    # default lognormal: EDM2's (−0.4, 1.0) for σ_d = 0.5, moved with σ_d
    assert normal_parameters(ObjectiveConfig(sigma_sampler="lognormal"), 1.0) == pytest.approx(
        (-0.4 + math.log(2), 1.0))
    shifted = NoiseSchedule(NoiseScheduleConfig(kind="flow", shift=3.0))
    sigma = draw_sigmas(ObjectiveConfig(sigma_sampler="logit_normal"), shifted, 1.0, 200_000, g)
    t = sigma / 3 / (1 + sigma / 3)  # the unshifted flow time: logit t ~ N(0, 1)
    logit = (t / (1 - t)).log()
    assert logit.mean().item() == pytest.approx(0.0, abs=0.01)
    assert logit.std().item() == pytest.approx(1.0, abs=0.01)


def test_learned_log_variance_starts_at_zero_and_learns_the_loss_level():
    """u(σ) = 0 at the start (the weighting alone); minimising L/e^u + u drives e^u to E[L(σ)]."""
    u = LearnedLogVariance()
    sigma = torch.tensor([0.05, 0.2, 1.0, 5.0, 30.0])
    assert u(sigma).abs().max().item() == 0.0
    level = 0.1 + sigma.log().abs()  # a per-σ loss level
    optimizer = torch.optim.Adam(u.parameters(), lr=0.05)
    for _ in range(600):
        optimizer.zero_grad()
        with_learned_variance(level, u(sigma)).mean().backward()
        optimizer.step()
    torch.testing.assert_close(u(sigma).exp(), level, rtol=0.05, atol=0.0)


def test_euler_in_sigma_is_the_flows_euler_on_the_velocity():
    """For a rectified flow, Euler on dx/dσ = (x − D)/σ over σ_i = t_i/(1 − t_i) visits x = x_t/(1 −
    t) for the x_t of the plain velocity Euler x_t ← x_t + (t' − t)·v̂(x_t, t) (SD3's sampler):
    both are exact for a locally linear flow, so the existing samplers sample flow models."""
    torch.manual_seed(0)
    net, precond = Net(), FlowPrediction()
    denoiser = Denoiser(net, precond)
    t_grid = torch.tensor([0.999, 0.8, 0.55, 0.3, 0.1, 0.0])
    sigmas = t_grid / (1 - t_grid)
    x_t = torch.randn(2, 3, 5, 5)
    x = sample_euler(denoiser, x_t.clone() * (1 + sigmas[0]), sigmas)
    for t, t_next in zip(t_grid[:-1], t_grid[1:]):
        v = net(x_t, torch.full((2,), 1000 * float(t)))
        x_t = x_t + (t_next - t) * v
    torch.testing.assert_close(x, x_t, rtol=1e-4, atol=1e-4)
