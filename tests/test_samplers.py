import pytest
import torch

from gaussian import MU, S, ExactDiscreteNet, exact_denoiser, ode_solution
from latentdiff.config import NoiseScheduleConfig
from latentdiff.denoiser import Denoiser
from latentdiff.errors import UserError
from latentdiff.noise import NoiseSchedule
from latentdiff.preconditioning import make_preconditioning
from latentdiff.samplers import sample_ddim, sample_ddpm, sigma_grid, timesteps
from latentdiff.samplers.randomness import per_sample_generators


def log_grid(n: int, sigma_max: float = 10.0, sigma_min: float = 0.002) -> torch.Tensor:
    sigmas = torch.logspace(torch.log10(torch.tensor(sigma_max)),
                            torch.log10(torch.tensor(sigma_min)), n,
                            dtype=torch.float64)
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def test_ddim_converges_to_the_exact_ode_solution_at_first_order():
    generator = torch.Generator().manual_seed(0)
    x_T = torch.randn(1000, dtype=torch.float64, generator=generator) * (S ** 2 + 100) ** 0.5
    errors = []
    for n in (10, 20, 40, 80):
        sigmas = log_grid(n)
        error = sample_ddim(exact_denoiser, x_T, sigmas) - ode_solution(x_T, sigmas[0])
        errors.append(error.abs().max().item())
    ratios = [errors[i + 1] / errors[i] for i in range(3)]
    # error halves as steps double: order 1
    assert all(0.4 < r < 0.6 for r in ratios), (errors, ratios)


@pytest.mark.parametrize("sampler,options",
                         [(sample_ddpm, {"variance": "small"}),
                          (sample_ddpm, {"variance": "large"}),
                          (sample_ddim, {"eta": 1.0}), (sample_ddim, {"eta": 0.0})])
def test_samples_match_the_data_moments(sampler, options):
    sigmas = log_grid(200)
    gen = torch.Generator().manual_seed(1)
    x_T = MU + torch.randn(40_000, dtype=torch.float64, generator=gen) * (S ** 2 + sigmas[0] ** 2).sqrt()
    x0 = sampler(exact_denoiser, x_T, sigmas, generator=gen, **options)
    assert x0.mean().item() == pytest.approx(MU, abs=0.01)
    assert x0.std().item() == pytest.approx(S, rel=0.04)


def test_ddim_eta_one_is_ddpm_with_the_posterior_variance():
    sigmas, x_T = log_grid(30), torch.randn(64, dtype=torch.float64) * 10
    a = sample_ddim(exact_denoiser, x_T, sigmas, eta=1.0,
                    generator=torch.Generator().manual_seed(3))
    b = sample_ddpm(exact_denoiser, x_T, sigmas, variance="small",
                    generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)


def test_samples_do_not_depend_on_the_batch():
    sigmas, x_T = log_grid(10), torch.randn(6, 2, dtype=torch.float64)
    full = sample_ddpm(exact_denoiser, x_T, sigmas, generator=per_sample_generators(range(6)))
    part = sample_ddpm(exact_denoiser, x_T[2:4], sigmas, generator=per_sample_generators([2, 3]))
    torch.testing.assert_close(full[2:4], part)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_denoiser_adapts_a_discrete_vp_network_exactly(prediction):
    schedule = NoiseSchedule(NoiseScheduleConfig())
    denoiser = Denoiser(ExactDiscreteNet(schedule, prediction),
                        make_preconditioning(schedule, prediction))
    x = torch.randn(8, 3)
    for t in (0, 100, 500, 999):
        sigma = schedule.sigmas[t]
        torch.testing.assert_close(denoiser(x * (1 + sigma), sigma),
                                   exact_denoiser(x * (1 + sigma), sigma),
                                   rtol=1e-4, atol=1e-4)


def test_grids():
    assert timesteps(1000, 4, "leading").tolist() == [750, 500, 250, 0]
    assert timesteps(1000, 4, "trailing").tolist() == [999, 749, 499, 249]
    assert timesteps(1000, 3, "uniform").tolist() == [999, 500, 0]
    schedule = NoiseSchedule(NoiseScheduleConfig())
    grid = sigma_grid(schedule, 25)
    assert len(grid) == 26 and grid[-1] == 0 and (grid.diff() < 0).all()
    for bad in (0, 1001):
        with pytest.raises(UserError, match="between 1 and"):
            timesteps(1000, bad)
    with pytest.raises(ValueError, match="eta"):
        sample_ddim(exact_denoiser, torch.zeros(1), grid, eta=-0.1)


def test_run_sampler_gives_one_line_errors_for_bad_requests():
    from latentdiff.samplers import run_sampler

    grid, x = sigma_grid(NoiseSchedule(NoiseScheduleConfig()), 5), torch.zeros(2, 3)
    cases = [("nope", grid, {}, "unknown sampler 'nope'; choose one of ddim, ddpm"),
             ("ddim", grid, {"eta": -0.5}, "sampler ddim: eta=-0.5 must be ≥ 0"),
             ("euler_ancestral", grid, {"eta": -1.0}, "must be ≥ 0"),
             ("heun", grid, {"eta": 1.0}, "sampler heun has no option eta; its options: s_churn"),
             ("unipc", grid, {"variant": "bh3"}, "variant='bh3'"),
             ("euler", torch.tensor([1.0, 2.0, 0.0]), {}, "strictly decreasing"),
             ("euler", torch.tensor([2.0, float("nan"), 0.0]), {}, "finite"),
             ("euler", torch.tensor([0.0]), {}, "at least 2 values")]
    for name, sigmas, options, message in cases:
        with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
            run_sampler(name, exact_denoiser, x, sigmas, **options)
    for spacing in ("karras", "exponential", "linspace"):
        with pytest.raises(UserError, match="between 1 and"):
            sigma_grid(NoiseSchedule(NoiseScheduleConfig()), 0, spacing)


def test_final_t0_grids_stop_at_the_noise_level_of_timestep_0():
    """CompVis's DDIM ends at ᾱ_0 (σ = √((1 − ᾱ_0)/ᾱ_0) = 0.0292 for SD's β_0 = 0.00085), once,
    whatever the spacing."""
    schedule = NoiseSchedule(NoiseScheduleConfig(kind="scaled_linear",
                                                 beta_start=0.00085, beta_end=0.012))
    compvis = sigma_grid(schedule, 10, "compvis", final="t0")
    assert len(compvis) == 11 and abs(float(compvis[-1]) - (0.00085 / 0.99915) ** 0.5) < 1e-6
    assert torch.equal(compvis[:-1], sigma_grid(schedule, 10, "compvis")[:-1])
    # these already end at timestep 0's σ: nothing is appended
    for spacing in ("leading", "karras"):
        grid = sigma_grid(schedule, 10, spacing, final="t0")
        assert len(grid) == 10 and float(grid[-1]) > 0
    with pytest.raises(UserError, match="final='one'"):
        sigma_grid(schedule, 10, final="one")


def test_sigma_spacings_span_the_schedule():
    schedule = NoiseSchedule(NoiseScheduleConfig())
    for spacing in ("karras", "exponential"):
        grid = sigma_grid(schedule, 10, spacing)
        assert len(grid) == 11 and grid[-1] == 0 and (grid.diff() < 0).all()
        torch.testing.assert_close(grid[[0, -2]], schedule.sigmas[[-1, 0]])
    ratios = sigma_grid(schedule, 10, "exponential")[:-1].log().diff()
    torch.testing.assert_close(ratios, ratios[:1].expand_as(ratios))  # log-uniform
    assert timesteps(1000, 10, "linspace").tolist() == [999, 899, 799, 699, 599,
                                                        500, 400, 300, 200, 100]
