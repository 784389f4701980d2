import pytest
import torch

from latentdiff.config import NoiseScheduleConfig
from latentdiff.noise import NoiseSchedule, make_betas
from latentdiff.preconditioning import (EDMPreconditioning, EpsPrediction, VPrediction,
                                        X0Prediction, append_dims,
                                        effective_target)


def test_beta_schedules():
    scaled = make_betas(NoiseScheduleConfig("scaled_linear", 1000, 0.00085, 0.012))
    assert scaled[0].item() == pytest.approx(0.00085) and scaled[-1].item() == pytest.approx(0.012)
    assert torch.allclose(scaled.sqrt().diff(), scaled.sqrt().diff()[0].expand(999))  # linear in √β
    linear = make_betas(NoiseScheduleConfig("linear", 10, 0.1, 0.2))
    torch.testing.assert_close(linear, torch.linspace(0.1, 0.2, 10, dtype=torch.float64))
    cosine = NoiseSchedule(NoiseScheduleConfig("cosine", 1000))
    assert (cosine.alphas_cumprod.diff() < 0).all() and cosine.alphas_cumprod[-1] < 1e-4
    assert cosine.betas.max() <= 0.999


SCHEDULE = NoiseSchedule(NoiseScheduleConfig())


def vp_targets(x0, eps, alpha_bar):
    """The discrete model's training targets in the VP form (DDPM, Salimans & Ho 2022): ε, z_0,
    v."""
    a = alpha_bar.reshape(-1, 1, 1, 1)
    return {EpsPrediction: eps, X0Prediction: x0, VPrediction: a.sqrt() * eps - (1 - a).sqrt() * x0}


@pytest.mark.parametrize("kind", [EpsPrediction, X0Prediction, VPrediction])
def test_preconditioning_recovers_x0_from_the_vp_targets(kind):
    """D = c_skip·x + c_out·F with F the VP target gives z_0 back; c_in·x is z_t = √ᾱ z_0 + √(1−ᾱ)
    ε; and the effective target (x0 − c_skip·x)/c_out is the VP target."""
    x0, eps = torch.randn(5, 3, 4, 4), torch.randn(5, 3, 4, 4)
    alpha_bar = torch.rand(5) * 0.98 + 0.01
    sigma = ((1 - alpha_bar) / alpha_bar).sqrt()
    x, precond = x0 + append_dims(sigma, x0) * eps, kind(SCHEDULE)
    target = vp_targets(x0, eps, alpha_bar)[kind]
    c_skip, c_out, c_in = (append_dims(c(sigma), x)
                           for c in (precond.c_skip, precond.c_out, precond.c_in))
    torch.testing.assert_close(c_in * x,
                               append_dims(alpha_bar.sqrt(), x) * x0 + append_dims((1 - alpha_bar).sqrt(), x)
                               * eps, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(c_skip * x + c_out * target, x0, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(effective_target(precond, x0, x, sigma),
                               target, rtol=1e-4, atol=1e-4)


def test_edm_preconditioning_has_unit_variance_input_and_target():
    """Karras et al. 2022, App. B.6: for data of std σ_d, c_in·x and the effective target have unit
    variance."""
    precond, generator = EDMPreconditioning(sigma_data=0.5), torch.Generator().manual_seed(0)
    for sigma in (0.01, 0.5, 3.0, 80.0):
        x0 = 0.5 * torch.randn(200_000, generator=generator)
        s = torch.full((200_000,), sigma)
        x = x0 + sigma * torch.randn(200_000, generator=generator)
        assert (precond.c_in(s) * x).std().item() == pytest.approx(1.0, rel=0.02)
        assert effective_target(precond, x0, x, s).std().item() == pytest.approx(1.0, rel=0.02)


def test_vp_input_is_the_forward_marginal():
    sigma = torch.full((200_000,), 4 / 3)  # ᾱ = 1/(1 + σ²) = 0.36
    x = 2.0 + sigma * torch.randn(200_000, generator=torch.Generator().manual_seed(0))
    z = EpsPrediction(SCHEDULE).c_in(sigma) * x
    assert z.mean().item() == pytest.approx(0.6 * 2.0, abs=0.01)
    assert z.var().item() == pytest.approx(0.64, rel=0.01)


def test_sigma_to_t_is_exact_on_the_grid_and_monotone_between():
    schedule = NoiseSchedule(NoiseScheduleConfig())
    t = torch.tensor([0, 1, 250, 998, 999])
    torch.testing.assert_close(schedule.sigma_to_t(schedule.sigmas[t]),
                               t.float(), rtol=0, atol=1e-3)
    between = schedule.sigma_to_t(torch.linspace(schedule.sigmas[0], schedule.sigmas[-1], 100))
    assert (between.diff() > 0).all()


def test_continuous_time_tables():
    """karras: σ_min … σ_max as Karras et al. 2022, Eq. 5; flow: σ = t/(1 − t) at t = i/T, the last
    one pure noise; shift α multiplies σ (log-SNR − 2 ln α); ᾱ = 1/(1 + σ²) throughout."""
    karras = NoiseSchedule(NoiseScheduleConfig(kind="karras", num_timesteps=50))
    assert karras.sigmas[0].item() == pytest.approx(0.002) and karras.sigmas[-1].item() == pytest.approx(80.0)
    steps = karras.sigmas.double() ** (1 / 7)
    torch.testing.assert_close(steps.diff(), steps.diff()[0].expand(49), rtol=1e-4, atol=0)
    flow = NoiseSchedule(NoiseScheduleConfig(kind="flow", num_timesteps=10))
    t = torch.arange(1, 10) / 10
    torch.testing.assert_close(flow.sigmas[:-1], t / (1 - t))
    assert flow.sigmas[-1] > 4000
    shifted = NoiseSchedule(NoiseScheduleConfig(kind="flow", num_timesteps=10, shift=3.0))
    torch.testing.assert_close(shifted.sigmas, 3 * flow.sigmas)
    for schedule in (karras, flow, shifted):
        torch.testing.assert_close(schedule.alphas_cumprod, 1 / (1 + schedule.sigmas ** 2))
        assert (schedule.sigmas.diff() > 0).all()


def test_beta_tables_are_unchanged_by_the_sigma_route():
    """A β schedule's table is ᾱ_t = Π(1 − β_s) whether built from β or through σ."""
    for cfg in (NoiseScheduleConfig(), NoiseScheduleConfig("cosine"),
                NoiseScheduleConfig("linear", zero_terminal_snr=True)):
        betas = make_betas(cfg)
        schedule = NoiseSchedule(cfg)
        if not cfg.zero_terminal_snr:
            torch.testing.assert_close(schedule.alphas_cumprod,
                                       torch.cumprod(1 - betas, 0).float(), rtol=1e-6, atol=1e-9)
            torch.testing.assert_close(schedule.betas, betas.float(), rtol=1e-5, atol=1e-9)
        else:
            assert schedule.alphas_cumprod[-1].item() == pytest.approx(4.9e-8)
