"""Preconditioning: how a network F_θ becomes the denoiser
D(x; σ) = c_skip(σ)·x + c_out(σ)·F_θ(c_in(σ)·x; c_noise(σ)).

Karras et al. 2022 (EDM), Eq. 7 and Table 1: every parameterisation of a diffusion model is a choice
of these four functions of σ, in the variance-exploding view x = z_0 + σ·n that the samplers use.
The paper's LDM (Sec. 3.2) trains a discrete-time variance-preserving network on z_t = √ᾱ_t·x with
ᾱ = 1/(1 + σ²) at timestep t(σ) (log-σ interpolation on the schedule): c_in = 1/√(1 + σ²),
c_noise = t(σ) for all three of its prediction types,

    ε-prediction:  c_skip = 1,            c_out = −σ                (D = x − σ·ε̂)
    x0-prediction: c_skip = 0,            c_out = 1                 (D = x̂₀)
    v-prediction:  c_skip = 1/(1 + σ²),   c_out = −σ/√(1 + σ²)      (Salimans & Ho 2022: v = √ᾱ·ε − √(1 − ᾱ)·z_0)

and EDM's own preconditioning is one more: c_skip = σ_d²/(σ² + σ_d²), c_out = σ·σ_d/√(σ² + σ_d²),
c_in = 1/√(σ² + σ_d²), c_noise = ¼·ln σ. A rectified flow (Liu et al. 2023; Esser et al. 2024)
x_t = (1 − t)·z_0 + t·ε is x/(1 + σ) at σ = t/(1 − t); its network predicts the velocity
v = ε − z_0, so z_0 = x_t − t·v: c_in = c_skip = 1/(1 + σ), c_out = −σ/(1 + σ), c_noise = 1000·t.
A new parameterisation is one class here; networks and samplers stay unchanged. σ is always a (B,)
float tensor; each function returns (B,).
"""

from dataclasses import dataclass

import torch

from latentdiff.noise import NoiseSchedule


def unit_data_prior_std(sigma_max: torch.Tensor | float) -> float:
    """√(1 + σ_max²): the std of x = z_0 + σ_max·n for unit-variance data."""
    return float((1.0 + torch.as_tensor(sigma_max, dtype=torch.float64) ** 2).sqrt())


@dataclass(frozen=True)
class DiscreteVP:
    """The discrete-time VP network's input side, common to ε, x0 and v: z_t = x/√(1 + σ²) at
    t(σ)."""

    schedule: NoiseSchedule

    def c_in(self, sigma: torch.Tensor) -> torch.Tensor:
        return (1 + sigma ** 2).rsqrt()

    def c_noise(self, sigma: torch.Tensor) -> torch.Tensor:
        return self.schedule.sigma_to_t(sigma)

    def prior_std(self, sigma_max: torch.Tensor | float) -> float:
        """Std of x_T in VE scale when z_T ~ N(0, I): x_T = z_T·√(1 + σ_max²)."""
        return unit_data_prior_std(sigma_max)

    def latent(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The VP latent z = x/√(1 + σ²) that x at noise level σ (a scalar tensor) stands for."""
        return x / (1 + sigma ** 2).sqrt()


@dataclass(frozen=True)
class EpsPrediction(DiscreteVP):
    """F_θ = ε̂: D = x − σ·ε̂ (DDPM's and the paper's choice)."""

    def c_skip(self, sigma: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(sigma)

    def c_out(self, sigma: torch.Tensor) -> torch.Tensor:
        return -sigma


@dataclass(frozen=True)
class X0Prediction(DiscreteVP):
    """F_θ = x̂₀: D = F_θ."""

    def c_skip(self, sigma: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(sigma)

    def c_out(self, sigma: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(sigma)


@dataclass(frozen=True)
class VPrediction(DiscreteVP):
    """F_θ = v̂: x̂₀ = √ᾱ·z_t − √(1 − ᾱ)·v̂ = x/(1 + σ²) − σ/√(1 + σ²)·v̂."""

    def c_skip(self, sigma: torch.Tensor) -> torch.Tensor:
        return 1 / (1 + sigma ** 2)

    def c_out(self, sigma: torch.Tensor) -> torch.Tensor:
        return -sigma * (1 + sigma ** 2).rsqrt()


@dataclass(frozen=True)
class EDMPreconditioning:
    """EDM (Karras et al. 2022, Table 1, "Ours"): unit-variance input and effective target for data
    of std σ_d."""

    sigma_data: float = 0.5

    def c_skip(self, sigma: torch.Tensor) -> torch.Tensor:
        return self.sigma_data ** 2 / (sigma ** 2 + self.sigma_data ** 2)

    def c_out(self, sigma: torch.Tensor) -> torch.Tensor:
        return sigma * self.sigma_data * (sigma ** 2 + self.sigma_data ** 2).rsqrt()

    def c_in(self, sigma: torch.Tensor) -> torch.Tensor:
        return (sigma ** 2 + self.sigma_data ** 2).rsqrt()

    def c_noise(self, sigma: torch.Tensor) -> torch.Tensor:
        return sigma.log() / 4

    def prior_std(self, sigma_max: torch.Tensor | float) -> float:
        """x_T ~ N(0, σ_max² I) (EDM samples from pure noise at σ_max)."""
        return float(sigma_max)

    def latent(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """x itself: the EDM model's data space is the VE one."""
        return x


# the flow network's time input: t ∈ [0, 1] on the scale of the discrete networks' timesteps
FLOW_TIME_SCALE = 1000.0


@dataclass(frozen=True)
class FlowPrediction:
    """F_θ = v̂ ≈ ε − z_0 at x_t = (1 − t)·z_0 + t·ε: D = x_t − t·v̂ with x_t = x/(1 + σ),
    t = σ/(1 + σ)."""

    def c_skip(self, sigma: torch.Tensor) -> torch.Tensor:
        return 1 / (1 + sigma)

    def c_out(self, sigma: torch.Tensor) -> torch.Tensor:
        return -sigma / (1 + sigma)

    def c_in(self, sigma: torch.Tensor) -> torch.Tensor:
        return 1 / (1 + sigma)

    def c_noise(self, sigma: torch.Tensor) -> torch.Tensor:
        return FLOW_TIME_SCALE * sigma / (1 + sigma)

    def prior_std(self, sigma_max: torch.Tensor | float) -> float:
        """x_T = x_t·(1 + σ) with x_t ~ N(0, (1 − t)² + t²) for unit data: √(1 + σ_max²), as for
        the VP models."""
        return unit_data_prior_std(sigma_max)

    def latent(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """x_t = x/(1 + σ)."""
        return x / (1 + sigma)


Preconditioning = EpsPrediction | X0Prediction | VPrediction | EDMPreconditioning | FlowPrediction


def make_preconditioning(schedule: NoiseSchedule, prediction: str,
                         sigma_data: float = 1.0) -> Preconditioning:
    """The preconditioning of a network trained to predict `prediction` (the config's
    diffusion.prediction: eps | x0 | v on `schedule`, edm for data of std `sigma_data`, flow)."""
    if prediction == "edm":
        return EDMPreconditioning(sigma_data)
    if prediction == "flow":
        return FlowPrediction()
    return {"eps": EpsPrediction, "x0": X0Prediction, "v": VPrediction}[prediction](schedule)


def effective_target(precond: Preconditioning, x0: torch.Tensor, x: torch.Tensor,
                     sigma: torch.Tensor) -> torch.Tensor:
    """F_target = (x0 − c_skip·x)/c_out (EDM Eq. 8): what F_θ should output so that D(x; σ) = x0;
    for the discrete VP types this is ε, x0 or v. x0, x: (B, ...); sigma: (B,) > 0."""
    return (x0 - append_dims(precond.c_skip(sigma), x) * x) / append_dims(precond.c_out(sigma), x)


def append_dims(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-sample (B,) tensor → (B, 1, …, 1) to broadcast against x (B, ...); floating values in
    x's dtype."""
    return (a.to(x.dtype) if a.is_floating_point() else a).reshape(-1, *([1] * (x.ndim - 1)))
