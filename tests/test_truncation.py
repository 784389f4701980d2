"""Truncated diffusion (TDPM): the truncated marginal, the truncated grids, the priors, and a tiny
model truncated, saved, loaded, sampled, resumed and exported through the commands."""

import subprocess
import sys

import pytest
import torch

from latentdiff.checkpoints import load_latent_diffusion
from latentdiff.checkpoints.io import read_metadata, read_tensors
from latentdiff.config import NoiseScheduleConfig, load_config
from latentdiff.config_systems import PriorNetworkConfig, TruncatedDiffusionTrainConfig
from latentdiff.errors import UserError
from latentdiff.noise import NoiseSchedule
from latentdiff.pipelines import generate
from latentdiff.samplers import run_sampler, sigma_grid
from latentdiff.truncation import (GaussianPrior, PriorDiscriminator, PriorGenerator,
                                   forward_marginal, truncation_sigma)

from conftest import tiny_ldm_config
from gaussian import MU, S, exact_denoiser, ode_solution

SCHEDULE = NoiseSchedule(NoiseScheduleConfig())


def test_the_truncated_marginal_is_the_forward_chain_composed_to_t_trunc():
    """q(z_t | z_{t−1}) = N(√(1 − β_t) z_{t−1}, β_t I) composed for t ≤ t_trunc is N(a z_0, v I) with
    a = √ᾱ, v = 1 − ᾱ, i.e. x = z/√ᾱ ~ N(z_0, σ²) with σ = σ_{t_trunc}: exactly the coefficients, and a
    simulated chain matches `forward_marginal` in mean and variance."""
    t_trunc = 99
    betas = SCHEDULE.betas[:t_trunc + 1].double()
    a, v = torch.tensor(1.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64)
    for beta in betas:
        a, v = (1 - beta).sqrt() * a, (1 - beta) * v + beta
    alpha_bar = SCHEDULE.alphas_cumprod[t_trunc].double()
    assert torch.allclose(a, alpha_bar.sqrt(), rtol=1e-5)
    assert torch.allclose(v, 1 - alpha_bar, rtol=1e-5)
    sigma = truncation_sigma(SCHEDULE, t_trunc)
    assert sigma == pytest.approx(float(((1 - alpha_bar) / alpha_bar).sqrt()), rel=1e-5)

    generator = torch.Generator().manual_seed(0)
    z0 = torch.full((40000,), 0.7, dtype=torch.float64)
    z = z0.clone()
    for beta in betas:
        z = (1 - beta).sqrt() * z + beta.sqrt() * torch.randn(z.shape, generator=generator,
                                                               dtype=torch.float64)
    chain = z / alpha_bar.sqrt()  # the VE view
    direct = forward_marginal(z0, sigma, torch.randn(z0.shape, generator=generator,
                                                     dtype=torch.float64))
    for x in (chain, direct):
        assert float(x.mean()) == pytest.approx(0.7, abs=4 * sigma / 200)
        assert float(x.std()) == pytest.approx(sigma, rel=0.02)


def test_truncated_grids_cover_only_the_first_t_trunc_timesteps():
    full = sigma_grid(SCHEDULE, 10, "uniform")
    assert torch.equal(sigma_grid(SCHEDULE, 10, "uniform", t_max=999), full)
    for spacing in ("uniform", "leading", "trailing", "karras", "exponential"):
        grid = sigma_grid(SCHEDULE, 5, spacing, t_max=99)
        assert len(grid) == 6 and grid[-1] == 0
        assert float(grid[0]) <= float(SCHEDULE.sigmas[99]) * (1 + 1e-6)
        assert (grid[1:] < grid[:-1]).all()
    assert float(sigma_grid(SCHEDULE, 5, "uniform", t_max=99)[0]) == float(SCHEDULE.sigmas[99])
    assert float(sigma_grid(SCHEDULE, 5, "karras", t_max=99)[0]) == pytest.approx(
        float(SCHEDULE.sigmas[99]), rel=1e-6)
    with pytest.raises(UserError, match="t_max=1000"):
        sigma_grid(SCHEDULE, 5, t_max=1000)
    with pytest.raises(UserError, match="steps=101 must be between 1 and 100, the timesteps"):
        sigma_grid(SCHEDULE, 101, t_max=99)
    with pytest.raises(UserError, match="t_trunc=999"):
        truncation_sigma(SCHEDULE, 999)


def test_the_gaussian_prior_matches_gaussian_data_and_the_truncated_chain_ends_at_the_data():
    """For data N(μ, s² I) the moment-matched prior is the exact truncated marginal N(μ, (s² + σ²) I);
    a sampler run on the truncated grid from it follows the exact ODE solution, so its samples are
    N(μ, s² I)."""
    generator = torch.Generator().manual_seed(1)
    latents = MU + S * torch.randn(20000, 1, 2, 2, generator=generator, dtype=torch.float64)
    sigma = truncation_sigma(SCHEDULE, 299)
    prior = GaussianPrior.of_latents(latents, sigma)
    cov = prior.scale_tril.double() @ prior.scale_tril.double().T
    assert torch.allclose(cov, (S ** 2 + sigma ** 2) * torch.eye(4, dtype=torch.float64), atol=0.01)
    x_T = prior(torch.randn(20000, 1, 2, 2, generator=generator)).double()
    assert float(x_T.mean()) == pytest.approx(MU, abs=0.02)
    assert float(x_T.std()) == pytest.approx((S ** 2 + sigma ** 2) ** 0.5, rel=0.02)

    grid = sigma_grid(SCHEDULE, 40, "karras", t_max=299).double()
    x0 = run_sampler("heun", exact_denoiser, x_T[:500], grid)
    # the exact ODE from σ_{t_trunc} down to the grid's σ_min, then its last (Euler) step, D(x; σ_min)
    s_min = grid[-2]
    at_min = MU + (ode_solution(x_T[:500], grid[0]) - MU) * (S ** 2 + s_min ** 2).sqrt() / S
    assert torch.allclose(x0, exact_denoiser(at_min, s_min), atol=1e-3)  # Heun, 40 steps
    assert float(x0.std()) == pytest.approx(S, rel=0.1)
    with pytest.raises(UserError, match="training size"):
        prior(torch.randn(2, 1, 4, 4))


def test_the_generator_draws_each_sample_from_its_own_noise_at_the_prior_scale():
    torch.manual_seed(0)
    sigma = 1.2
    G = PriorGenerator(3, sigma, PriorNetworkConfig(channels=16, blocks=2))
    n = torch.randn(6, 3, 8, 8)
    out = G(n)
    assert out.shape == n.shape
    assert torch.allclose(G(n[2:3]), out[2:3], atol=1e-6)  # batch-independent
    assert G(n[:, :, :4, :4]).shape == (6, 3, 4, 4)  # any latent size
    D = PriorDiscriminator(3, sigma, PriorNetworkConfig(channels=16, blocks=2))
    assert D(out).shape == (6,) and D(torch.randn(5, 3, 8, 8)).shape == (5,)
    assert float(G.scale) == pytest.approx((1 + sigma ** 2) ** 0.5)


@pytest.fixture(scope="module")
def unconditional(trained_autoencoder, tmp_path_factory):
    from latentdiff.train.diffusion import train_latent_diffusion

    out = tmp_path_factory.mktemp("tdpm-base")
    return train_latent_diffusion(tiny_ldm_config(out, trained_autoencoder, "unet.num_classes=null",
                                                  "train.max_steps=4"))


def _config(model, out, *extra):
    return load_config(TruncatedDiffusionTrainConfig, "tdpm-digits", [
        f"model={model}", f"train.out_dir={out}", "generator.channels=8", "generator.blocks=1",
        "discriminator.channels=8", "discriminator.blocks=1", "train.batch_size=8",
        "train.log_every=1", "train.sample_every=0", *extra])


def test_a_truncated_model_samples_from_its_prior_on_the_truncated_chain(unconditional, tmp_path):
    from latentdiff.train.truncation import train_tdpm

    path = train_tdpm(_config(unconditional, tmp_path / "g", "prior=gaussian", "t_trunc=49"))
    metadata = read_metadata(path)
    assert metadata["truncation"]["kind"] == "gaussian" and metadata["truncation"]["t_trunc"] == 49
    model = load_latent_diffusion(path)
    base = load_latent_diffusion(unconditional)
    assert model.prior is not None and base.prior is None
    assert model.sampling_defaults["steps"] == 50
    seen = []
    images = generate(model, seeds=[0, 1, 2], steps=4, decode=False,
                      callback=lambda info: seen.append(float(info["sigma"])))
    assert seen[0] == pytest.approx(float(model.schedule.sigmas[49]))
    assert torch.allclose(generate(model, seeds=[1], steps=4, decode=False), images[1:2], atol=1e-5)
    assert not torch.allclose(generate(base, seeds=[0, 1, 2], steps=4, decode=False), images)

    # the start of the chain is the prior's draw: with one step and the exact prior replaced by a
    # constant, the sample is the denoiser's estimate at σ_49 of that constant
    model.prior.network.mean.fill_(0.25)
    model.prior.network.scale_tril.zero_()
    one = generate(model, seeds=[3], steps=1, sampler="euler", decode=False)
    x = torch.full_like(one, 0.25)
    sigma = model.schedule.sigmas[49:50]
    assert torch.allclose(one, model.denoiser(x, sigma, None), atol=1e-5)


def test_the_gan_prior_trains_resumes_exactly_and_survives_export(unconditional, tmp_path):
    from latentdiff.checkpoints.models import export_latent_diffusion
    from latentdiff.train.truncation import train_tdpm

    whole = train_tdpm(_config(unconditional, tmp_path / "whole", "train.max_steps=4",
                               "train.checkpoint_every=2"))
    _ = train_tdpm(_config(unconditional, tmp_path / "half", "train.max_steps=2"))
    resumed = train_tdpm(_config(unconditional, tmp_path / "half", "train.max_steps=4",
                                 "train.checkpoint_every=2"), resume=True)
    a, b = read_tensors(whole, "prior."), read_tensors(resumed, "prior.")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert read_metadata(whole)["train_state"]["ema_updates"] == 4
    exported = export_latent_diffusion(whole, tmp_path / "small.safetensors", dtype="fp32")
    model, again = load_latent_diffusion(whole), load_latent_diffusion(exported)
    assert again.prior is not None and again.prior.kind == "gan"
    assert torch.equal(generate(model, seeds=[5], steps=3), generate(again, seeds=[5], steps=3))


def test_train_tdpm_refuses_models_a_prior_cannot_start(trained_autoencoder, unconditional,
                                                        tmp_path):
    from latentdiff.train.diffusion import train_latent_diffusion
    from latentdiff.train.truncation import train_tdpm

    conditional = train_latent_diffusion(tiny_ldm_config(tmp_path / "c", trained_autoencoder,
                                                         "train.max_steps=1"))
    with pytest.raises(UserError, match="conditional model"):
        train_tdpm(_config(conditional, tmp_path / "x"))
    with pytest.raises(UserError, match="t_trunc=999"):
        train_tdpm(_config(unconditional, tmp_path / "y", "t_trunc=999"))
    with pytest.raises(UserError, match="prior='vae'"):
        _config(unconditional, tmp_path / "z", "prior=vae")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_the_commands_train_and_sample_a_truncated_model(unconditional, tmp_path):
    run = [sys.executable, "-m", "latentdiff"]
    out = tmp_path / "cli"
    done = subprocess.run([*run, "train-tdpm", "tdpm-digits", f"model={unconditional}",
                           "prior=gaussian", f"train.out_dir={out}"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    grid = tmp_path / "grid.png"
    done = subprocess.run([*run, "sample", str(out / "checkpoints" / "last.safetensors"), "--n", "4",
                           "--steps", "3", "--out", str(grid)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert grid.stat().st_size > 0
