"""WaveDiff (`gan_chain.py`, `wavediff.py`, `train/wavediff.py`): the DDGAN chain's closed forms,
the wavelet generator's shapes and cost, per-seed sampling, exact resumption and the commands."""

import subprocess
import sys

import pytest
import torch

from latentdiff.checkpoints.io import read_metadata, read_tensors
from latentdiff.config import load_config
from latentdiff.config_systems import (WaveDiffTrainConfig, WaveletDiscriminatorConfig,
                                       WaveletGeneratorConfig)
from latentdiff.errors import UserError
from latentdiff.gan_chain import GANChainSchedule
from latentdiff.network import network_cost
from latentdiff.wavediff import WaveletDiscriminator, WaveletGenerator, _from_subbands, _subbands

TINY = ["generator.channels=16", "generator.z_dim=8", "generator.emb_dim=16",
        "generator.mapping_layers=1", "discriminator.channels=16", "discriminator.emb_dim=16",
        "data.image_size=16", "data.holdout=200", "train.batch_size=8", "train.log_every=1",
        "train.sample_every=0", "ema_decay=0.9"]


def _config(autoencoder, out, *extra: str) -> WaveDiffTrainConfig:
    return load_config(WaveDiffTrainConfig, "wavediff-digits",
                       [f"autoencoder={autoencoder}", f"train.out_dir={out}", *TINY, *extra])


@pytest.mark.parametrize("T", [1, 2, 4, 8])
def test_the_chain_marginals_compose_and_the_posterior_is_the_gaussian_conditional(T):
    s = GANChainSchedule(T)
    a, alpha = s.alphas_cumprod, s.alphas
    assert a[0] == 1 and a[-1] < 1e-4  # from the data to (almost) pure noise
    assert torch.allclose(torch.cumprod(alpha, 0), a, rtol=1e-12)
    for k in range(1, T + 1):
        # (x_{k−1}, x_k) | x_0 is jointly Gaussian: condition x_{k−1} on x_k
        var_prev, var_k = 1 - a[k - 1], 1 - a[k]
        cov = alpha[k].sqrt() * var_prev
        gain = cov / var_k
        x0, xk = torch.tensor([0.7], dtype=torch.float64), torch.tensor([-1.3], dtype=torch.float64)
        mean = a[k - 1].sqrt() * x0 + gain * (xk - a[k].sqrt() * x0)
        kk = torch.tensor([k])
        got = s.posterior(x0.view(1, 1, 1, 1), xk.view(1, 1, 1, 1), kk, torch.zeros(1, 1, 1, 1,
                                                                                      dtype=torch.float64))
        assert torch.allclose(got.flatten(), mean, atol=1e-10)
        assert torch.isclose(s.posterior_variance[k], var_prev - gain * cov, atol=1e-10)
    # at k = 1 the posterior is x_0 itself
    one = torch.ones(1, dtype=torch.long)
    x0, xk, n = torch.randn(3, 1, 2, 2, 2, dtype=torch.float64).unbind(0)
    assert torch.allclose(s.posterior(x0, xk, one, n), x0)


def test_a_step_of_the_chain_after_the_marginal_is_the_next_marginal():
    s, g = GANChainSchedule(4), torch.Generator().manual_seed(0)
    x0 = 1 + 0.5 * torch.randn(40000, 1, 1, 1, generator=g, dtype=torch.float64)
    for k in range(1, 5):
        kk = torch.full((len(x0),), k)
        composed = s.step(s.marginal(x0, kk - 1, torch.randn(x0.shape, generator=g,
                                                               dtype=torch.float64)),
                          kk, torch.randn(x0.shape, generator=g, dtype=torch.float64))
        a = s.alphas_cumprod[k]
        assert abs(composed.mean() - a.sqrt()) < 0.02
        assert abs(composed.var() - (a * 0.25 + 1 - a)) < 0.03


def test_the_wavelet_generator_works_on_subbands_at_a_fifth_of_the_cost():
    x = torch.randn(3, 2, 8, 8)
    assert torch.allclose(_from_subbands(_subbands(x)), x, atol=1e-6)
    cfg = WaveletGeneratorConfig(channels=16, z_dim=8, emb_dim=16)
    wavelet, plain = WaveletGenerator(2, cfg), WaveletGenerator(2, WaveletGeneratorConfig(
        channels=16, z_dim=8, emb_dim=16, wavelet=False))
    k, z = torch.tensor([1, 2, 4]), torch.randn(3, 8)
    assert wavelet(x, k, z).shape == plain(x, k, z).shape == x.shape
    assert wavelet.conv_in.in_channels == 8 and wavelet.latent_multiple == 8
    cost = [network_cost(g, (2, 8, 8), z=torch.zeros(1, 8)).gflops for g in (wavelet, plain)]
    assert cost[0] < cost[1] / 3
    for flag in (True, False):
        d = WaveletDiscriminator(2, WaveletDiscriminatorConfig(channels=16, emb_dim=16), flag)
        assert d(x, x, k).shape == (3,)


def test_wavediff_trains_resumes_exactly_and_samples_per_seed(trained_autoencoder, tmp_path):
    from latentdiff.checkpoints.wavediff import load_wavediff
    from latentdiff.pipelines.wavediff import generate_wavediff
    from latentdiff.train.wavediff import train_wavediff

    whole = train_wavediff(_config(trained_autoencoder, tmp_path / "whole", "train.max_steps=4",
                                   "train.checkpoint_every=2", "num_timesteps=2"))
    train_wavediff(_config(trained_autoencoder, tmp_path / "half", "train.max_steps=2",
                           "num_timesteps=2"))
    resumed = train_wavediff(_config(trained_autoencoder, tmp_path / "half", "train.max_steps=4",
                                     "train.checkpoint_every=2", "num_timesteps=2"), resume=True)
    for prefix in ("generator.", "generator_ema.", "discriminator."):
        a, b = read_tensors(whole, prefix), read_tensors(resumed, prefix)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert read_metadata(whole)["train_state"]["ema_updates"] == 4
    model = load_wavediff(whole)
    assert model.schedule.T == 2 and model.latent_shape == (2, 8, 8)
    batch = generate_wavediff(model, seeds=[3, 4, 5])
    alone = generate_wavediff(model, seeds=[5])
    assert batch.shape == (3, 1, 16, 16) and torch.allclose(batch[2:], alone, atol=1e-5)
    assert not torch.allclose(batch[0], batch[1])
    with pytest.raises(UserError, match="steps=3"):
        generate_wavediff(model, seeds=[0], steps=3)
    with pytest.raises(UserError, match="unconditional"):
        generate_wavediff(model, seeds=[0], guidance_scale=2.0)


def test_train_wavediff_refuses_latents_its_generator_cannot_halve(trained_autoencoder, tmp_path):
    from latentdiff.train.wavediff import train_wavediff

    with pytest.raises(UserError, match="multiples of 16"):
        train_wavediff(_config(trained_autoencoder, tmp_path / "x",
                               "generator.channel_mult=[1,2,2]"))
    assert not (tmp_path / "x").exists()
    with pytest.raises(UserError, match="num_timesteps=0"):
        _config(trained_autoencoder, tmp_path / "y", "num_timesteps=0")


def test_the_commands_train_sample_and_evaluate_a_wavediff_model(trained_autoencoder, tmp_path):
    run = [sys.executable, "-m", "latentdiff"]
    out = tmp_path / "cli"
    done = subprocess.run([*run, "train-wavediff", "wavediff-digits",
                           f"autoencoder={trained_autoencoder}", f"train.out_dir={out}",
                           "train.max_steps=2", *TINY], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    checkpoint = str(out / "checkpoints" / "last.safetensors")
    grid = tmp_path / "grid.png"
    done = subprocess.run([*run, "sample", checkpoint, "--n", "4", "--out", str(grid)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert grid.stat().st_size > 0
    done = subprocess.run([*run, "sample", checkpoint, "--prompt", "a cat", "--out", str(grid)],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "--prompt does not apply to a WaveDiff model" in done.stderr
    done = subprocess.run([*run, "sample", checkpoint, "--steps", "2", "--out", str(grid)],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "samples in the 4 steps" in done.stderr
    done = subprocess.run([*run, "eval", checkpoint, "--n", "8", "--seeds", "2"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "samples, guidance 1" in done.stdout
