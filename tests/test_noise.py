import pytest
import torch

from latentdiff.config import NoiseScheduleConfig
from latentdiff.noise import NoiseSchedule, make_betas, predict_eps, predict_x0, q_sample, training_target


def test_beta_schedules():
    scaled = make_betas(NoiseScheduleConfig("scaled_linear", 1000, 0.00085, 0.012))
    assert scaled[0].item() == pytest.approx(0.00085) and scaled[-1].item() == pytest.approx(0.012)
    assert torch.allclose(scaled.sqrt().diff(), scaled.sqrt().diff()[0].expand(999))  # linear in √β
    linear = make_betas(NoiseScheduleConfig("linear", 10, 0.1, 0.2))
    torch.testing.assert_close(linear, torch.linspace(0.1, 0.2, 10, dtype=torch.float64))
    cosine = NoiseSchedule(NoiseScheduleConfig("cosine", 1000))
    assert (cosine.alphas_cumprod.diff() < 0).all() and cosine.alphas_cumprod[-1] < 1e-4
    assert cosine.betas.max() <= 0.999


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_target_conversions_round_trip(prediction):
    x0, eps = torch.randn(5, 3, 4, 4), torch.randn(5, 3, 4, 4)
    alpha_bar = torch.rand(5) * 0.98 + 0.01
    z_t = q_sample(x0, alpha_bar, eps)
    output = training_target(prediction, x0, eps, alpha_bar)
    torch.testing.assert_close(predict_x0(prediction, z_t, output, alpha_bar), x0, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(predict_eps(prediction, z_t, output, alpha_bar), eps, rtol=1e-4, atol=1e-4)


def test_q_sample_is_the_forward_marginal():
    x0, alpha_bar = torch.full((200_000,), 2.0), torch.full((200_000,), 0.36)
    z = q_sample(x0, alpha_bar, torch.randn(200_000, generator=torch.Generator().manual_seed(0)))
    assert z.mean().item() == pytest.approx(0.6 * 2.0, abs=0.01) and z.var().item() == pytest.approx(0.64, rel=0.01)


def test_sigma_to_t_is_exact_on_the_grid_and_monotone_between():
    schedule = NoiseSchedule(NoiseScheduleConfig())
    t = torch.tensor([0, 1, 250, 998, 999])
    torch.testing.assert_close(schedule.sigma_to_t(schedule.sigmas[t]), t.float(), rtol=0, atol=1e-3)
    between = schedule.sigma_to_t(torch.linspace(schedule.sigmas[0], schedule.sigmas[-1], 100))
    assert (between.diff() > 0).all()
