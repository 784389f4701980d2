"""Truncated diffusion (TDPM; Zheng et al., ICLR 2023): the forward chain stops at T_trunc < T, and
the reverse chain starts from a prior p(x_{T_trunc}) that matches the data noised to T_trunc, so
sampling runs only the chain's last T_trunc + 1 timesteps.

In the samplers' VE view (`preconditioning.py`) the truncated marginal is

    q(x_σ) = ∫ p_data(z_0) N(x_σ; z_0, σ² I) dz_0,    σ = σ_{T_trunc} = √((1 − ᾱ)/ᾱ),

the VP chain's z_{T_trunc} = √ᾱ·z_0 + √(1 − ᾱ)·ε scaled by 1/√ᾱ (`forward_marginal`). Two priors
map a standard normal draw n (B, c, h, w) to x_σ, so that a sample depends only on its own seed:
- `GaussianPrior`: the moment-matched Gaussian N(μ, Σ + σ² I) of the training latents' mean μ and
  covariance Σ (training-free; exact when the latents are Gaussian);
- `PriorGenerator`: TDPM's implicit prior, a small convolutional generator G(n) trained
  adversarially against samples of q(x_σ) (`PriorDiscriminator`; `train/truncation.py`).
Both work in the unit-variance scale u = x/√(1 + σ²) and return x.
"""

import dataclasses
import math

import torch
from torch import nn

from latentdiff.config_systems import PriorNetworkConfig
from latentdiff.errors import UserError
from latentdiff.nn.layers import minibatch_std
from latentdiff.noise import NoiseSchedule

# flattened latents up to this size get a full covariance; larger ones a per-element variance
FULL_COVARIANCE_MAX = 4096


def truncation_sigma(schedule: NoiseSchedule, t_trunc: int) -> float:
    """σ of timestep t_trunc (0-based index into the schedule's T timesteps)."""
    if not 0 <= t_trunc < schedule.num_timesteps - 1:
        raise UserError(f"t_trunc={t_trunc} must be in 0 … {schedule.num_timesteps - 2} (the "
                        f"schedule has {schedule.num_timesteps} timesteps; T − 1 is the full chain)")
    return float(schedule.sigmas[t_trunc])


def forward_marginal(z0: torch.Tensor, sigma: float, noise: torch.Tensor) -> torch.Tensor:
    """A draw of q(x_σ | z_0) in VE scale: x_σ = z_0 + σ·n, n ~ N(0, I); (B, c, h, w)."""
    return z0 + sigma * noise


def _gn(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, channels), channels)


class _ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.block = nn.Sequential(_gn(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
                                   _gn(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class PriorGenerator(nn.Module):
    """G: n (B, c, h, w) ~ N(0, I) → x_σ (B, c, h, w): a 3×3 conv in, `blocks` residual blocks of
    `channels` channels, a 3×3 conv out to u, then x = √(1 + σ²)·u. Convolutional, so it draws
    priors at any latent size."""

    def __init__(self, latent_channels: int, sigma: float, cfg: PriorNetworkConfig):
        super().__init__()
        self.config = cfg
        self.conv_in = nn.Conv2d(latent_channels, cfg.channels, 3, padding=1)
        self.blocks = nn.Sequential(*(_ResBlock(cfg.channels) for _ in range(cfg.blocks)))
        self.conv_out = nn.Sequential(_gn(cfg.channels), nn.SiLU(),
                                      nn.Conv2d(cfg.channels, latent_channels, 3, padding=1))
        self.register_buffer("scale", torch.tensor(math.sqrt(1 + sigma ** 2)))

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        return self.scale * self.conv_out(self.blocks(self.conv_in(noise)))


class PriorDiscriminator(nn.Module):
    """D: x_σ (B, c, h, w) → logits (B,): on u = x/√(1 + σ²), a 3×3 conv, then `blocks` pairs of
    3×3 convs (LeakyReLU 0.2), every pair but the last halving the size; the minibatch standard
    deviation (StyleGAN's, over groups of up to 4 samples) as one more channel, global average
    pooling and a linear layer."""

    def __init__(self, latent_channels: int, sigma: float, cfg: PriorNetworkConfig):
        super().__init__()
        width = cfg.channels
        layers: list[nn.Module] = [nn.Conv2d(latent_channels, width, 3, padding=1), nn.LeakyReLU(0.2)]
        for i in range(cfg.blocks):
            stride = 2 if i < cfg.blocks - 1 else 1
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.LeakyReLU(0.2),
                       nn.Conv2d(width, width, 3, stride=stride, padding=1), nn.LeakyReLU(0.2)]
        self.features = nn.Sequential(*layers)
        self.conv_std = nn.Conv2d(width + 1, width, 3, padding=1)
        self.head = nn.Linear(width, 1)
        self.register_buffer("scale", torch.tensor(math.sqrt(1 + sigma ** 2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = minibatch_std(self.features(x / self.scale))
        return self.head(nn.functional.leaky_relu(self.conv_std(h), 0.2).mean((2, 3))).squeeze(1)


class GaussianPrior(nn.Module):
    """x_σ = μ + L·n with L Lᵀ = Σ + σ² I (full covariance for c·h·w ≤ FULL_COVARIANCE_MAX, else a
    per-element variance), μ and Σ the training latents' (`of_latents`)."""

    def __init__(self, shape: tuple[int, int, int], full: bool):
        super().__init__()
        d = math.prod(shape)
        self.shape = tuple(shape)
        self.register_buffer("mean", torch.zeros(d))
        self.register_buffer("scale_tril", torch.eye(d) if full else torch.ones(d))

    @classmethod
    @torch.no_grad()
    def of_latents(cls, z0: torch.Tensor, sigma: float) -> "GaussianPrior":
        """The moment-matched prior of latents z0 (N, c, h, w) noised to σ."""
        d = math.prod(z0.shape[1:])
        prior = cls(tuple(z0.shape[1:]), d <= FULL_COVARIANCE_MAX)
        z = z0.flatten(1).double()
        prior.mean.copy_(z.mean(0))
        if d <= FULL_COVARIANCE_MAX:
            cov = torch.cov(z.T) + sigma ** 2 * torch.eye(d, dtype=torch.float64)
            prior.scale_tril.copy_(torch.linalg.cholesky(cov))
        else:
            prior.scale_tril.copy_((z.var(0) + sigma ** 2).sqrt())
        return prior

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        if tuple(noise.shape[1:]) != self.shape:
            raise UserError(f"this model's Gaussian prior draws latents of shape {self.shape}, not "
                            f"{tuple(noise.shape[1:])}: sample at its training size")
        n = noise.flatten(1)
        x = n @ self.scale_tril.T if self.scale_tril.ndim == 2 else n * self.scale_tril
        return (self.mean + x).view_as(noise)


class TruncatedPrior(nn.Module):
    """The start of a truncated chain: `draw(n)` → x at σ_{t_trunc} (B, c, h, w) from standard
    normal n of the same shape; `kind` is "gan" (a `PriorGenerator`) or "gaussian"."""

    def __init__(self, kind: str, t_trunc: int, sigma: float, network: nn.Module):
        super().__init__()
        self.kind, self.t_trunc, self.sigma = kind, t_trunc, sigma
        self.network = network

    def draw(self, noise: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.network(noise)

    def metadata(self) -> dict:
        """What rebuilds it (`prior_from_metadata`), stored as a checkpoint's "truncation"."""
        gaussian = isinstance(self.network, GaussianPrior)
        return {"kind": self.kind, "t_trunc": self.t_trunc, "sigma": self.sigma,
                "generator": None if gaussian else dataclasses.asdict(self.network.config),
                "shape": list(self.network.shape) if gaussian else None}


def prior_from_metadata(meta: dict, latent_channels: int) -> TruncatedPrior:
    """An empty prior of the configuration a checkpoint's "truncation" metadata stores (its weights
    are the checkpoint's "prior.*" tensors)."""
    sigma = float(meta["sigma"])
    if meta["kind"] == "gaussian":
        shape = tuple(meta["shape"])
        network = GaussianPrior(shape, math.prod(shape) <= FULL_COVARIANCE_MAX)
    else:
        network = PriorGenerator(latent_channels, sigma, PriorNetworkConfig(**meta["generator"]))
    return TruncatedPrior(meta["kind"], int(meta["t_trunc"]), sigma, network)
