"""Post-hoc EMA (Karras et al. 2024, Sec. 3): power-function EMAs and their reconstruction."""

import numpy as np
import pytest
import torch
from torch import nn

from conftest import tiny_ldm_config
from latentdiff.checkpoints import load_latent_diffusion, read_metadata, read_tensors
from latentdiff.cli import main
from latentdiff.config import PostHocEMAConfig
from latentdiff.pipelines import generate
from latentdiff.train.diffusion import train_latent_diffusion
from latentdiff.train.ema import PowerEMA, gamma_to_sigma_rel, sigma_rel_to_gamma
from latentdiff.train.posthoc_ema import PostHocEMA, reconstruct, solve_coefficients


def test_sigma_rel_and_gamma():
    """The paper's pairs: σ_rel 0.05 ↔ γ ≈ 16.97, 0.10 ↔ γ ≈ 6.94 (Sec. 3.1)."""
    assert sigma_rel_to_gamma(0.05) == pytest.approx(16.97, abs=0.01)
    assert sigma_rel_to_gamma(0.10) == pytest.approx(6.94, abs=0.01)
    for s in (0.01, 0.05, 0.2):
        assert gamma_to_sigma_rel(sigma_rel_to_gamma(s)) == pytest.approx(s)


def test_power_ema_weights_are_the_power_profile():
    """After t updates with θ_τ = e_τ (one-hot), θ̂_t holds w_τ = (τ^(γ+1) − (τ − 1)^(γ+1))/t^(γ+1)."""
    t, layer = 50, nn.Linear(50, 1, bias=False)
    ema = PowerEMA(layer, 0.1)
    for tau in range(1, t + 1):
        with torch.no_grad():
            layer.weight.zero_()
            layer.weight[0, tau - 1] = 1.0
        ema.update(layer)
    g = ema.gamma
    tau = np.arange(1, t + 1, dtype=np.float64)
    expected = (tau ** (g + 1) - (tau - 1) ** (g + 1)) / t ** (g + 1)
    np.testing.assert_allclose(ema.model.weight[0].double().numpy(), expected, rtol=1e-5,
                               atol=1e-12)


def trajectory(steps: int, dim: int, seed: int = 0) -> torch.Tensor:
    """Weights of a noisy optimisation: a drift towards a moving optimum plus noise, (steps, dim)."""
    g = torch.Generator().manual_seed(seed)
    drift = torch.linspace(0, 1, steps).unsqueeze(1) * torch.randn(1, dim, generator=g)
    walk = torch.randn(steps, dim, generator=g).cumsum(0) / steps ** 0.5
    return drift + walk + 0.5 * torch.randn(steps, dim, generator=g)


def test_reconstruction_matches_a_directly_tracked_ema(tmp_path):
    """Snapshots of the σ_rel = 0.05 and 0.10 EMAs every 100 of 3,000 steps reconstruct EMAs of
    other widths at the end within 1 % of the spread that averaging removes."""
    steps, dim = 3000, 400
    thetas = trajectory(steps, dim)
    layer = nn.Linear(dim, 1, bias=False)
    cfg = PostHocEMAConfig(snapshot_every=100)
    posthoc = PostHocEMA(layer, cfg, tmp_path)
    direct = {s: PowerEMA(layer, s) for s in (0.03, 0.07, 0.15)}
    for step in range(1, steps + 1):
        with torch.no_grad():
            layer.weight[0] = thetas[step - 1]
        posthoc.update(layer)
        for ema in direct.values():
            ema.update(layer)
        if step % cfg.snapshot_every == 0:
            posthoc.snapshot(step)
    for sigma_rel, ema in direct.items():
        weights, info = reconstruct(tmp_path, sigma_rel, steps)
        assert info["snapshots"] == steps // 100
        got, want = weights["unet.weight"][0].float(), ema.model.weight[0]
        scale = (thetas[-1] - want).norm()  # what the averaging changed
        assert (got - want).norm() / scale < 0.01, sigma_rel
    # a stored width comes back (almost) as its own snapshot
    weights, _ = reconstruct(tmp_path, 0.05, steps)
    torch.testing.assert_close(weights["unet.weight"].float(), posthoc.emas[0].model.weight,
                               rtol=0, atol=2e-3)


def test_coefficients_of_a_stored_profile_pick_that_snapshot():
    steps = np.array([100.0, 100.0, 200.0, 200.0])
    gammas = np.array([6.94, 16.97, 6.94, 16.97])
    x = solve_coefficients(steps, gammas, 200, 16.97)
    np.testing.assert_allclose(x, [0, 0, 0, 1], atol=1e-6)


RECIPES = {"edm": ["diffusion.prediction=edm", "diffusion.schedule.kind=karras",
                   "objective.sigma_sampler=lognormal", "objective.weighting=edm",
                   "objective.learned_weighting=true"],
           "flow": ["diffusion.prediction=flow", "diffusion.schedule.kind=flow",
                    "diffusion.schedule.shift=2.0", "objective.sigma_sampler=logit_normal"],
           "v-min-snr": ["diffusion.prediction=v", "objective.weighting=min_snr"]}


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_modern_recipes_resume_exactly_and_posthoc_ema_samples(recipe, tmp_path,
                                                               trained_autoencoder):
    """Each recipe trains, resumes bit-exactly (network, EMAs, power EMAs, learned weighting,
    optimiser), and `latentdiff ema` turns its snapshots into a checkpoint that samples."""
    extra = [*RECIPES[recipe], "posthoc_ema.snapshot_every=2"]
    straight = train_latent_diffusion(tiny_ldm_config(tmp_path / "a", trained_autoencoder,
                                                      "train.max_steps=4", *extra))
    train_latent_diffusion(tiny_ldm_config(tmp_path / "b", trained_autoencoder,
                                           "train.max_steps=2", *extra))
    resumed = train_latent_diffusion(tiny_ldm_config(tmp_path / "b", trained_autoencoder,
                                                     "train.max_steps=4", *extra), resume=True)
    a, b = read_tensors(straight), read_tensors(resumed)
    parts = {"unet", "unet_ema", "unet_phema0", "unet_phema1", "autoencoder", "optimizer"}
    assert {k.split(".")[0] for k in a} == parts | ({"loss_weighting"} if recipe == "edm" else set())
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
    snapshots = sorted(p.name for p in (tmp_path / "b" / "phema").iterdir())
    assert snapshots == ["step-0000002.safetensors", "step-0000004.safetensors"]

    out = tmp_path / "ema.safetensors"
    assert main(["ema", str(resumed), "--sigma-rel", "0.1", "--out", str(out)]) == 0
    stored = read_tensors(resumed, "unet_phema1.")
    torch.testing.assert_close(read_tensors(out, "unet_ema."), stored, rtol=0, atol=1e-4)
    assert read_metadata(out)["posthoc_ema"]["sigma_rel"] == 0.1
    model = load_latent_diffusion(out)
    assert model.prediction == RECIPES[recipe][0].split("=")[1]
    images = generate(model, seeds=[0, 1], class_labels=[3, 4], steps=3)
    assert images.shape == (2, 1, 16, 16) and torch.isfinite(images).all()
    if recipe != "v-min-snr":  # no diffusers scheduler describes it
        assert main(["convert", str(out), str(tmp_path / "pipeline")]) == 2
        assert not (tmp_path / "pipeline").exists()


def test_posthoc_ema_needs_snapshots(tmp_path, trained_autoencoder, capsys):
    checkpoint = train_latent_diffusion(tiny_ldm_config(tmp_path, trained_autoencoder,
                                                        "train.max_steps=1"))
    assert main(["ema", str(checkpoint), "--sigma-rel", "0.05"]) == 2
    assert "posthoc_ema.snapshot_every > 0" in capsys.readouterr().err
    assert main(["ema", str(checkpoint), "--sigma-rel", "0.5"]) == 2
