"""The mask-and-replace forward process of VQ-Diffusion (Gu et al., CVPR 2022, Sec. 3.2) over the K
codes of a VQ autoencoder plus one [MASK] token (index K): the discrete counterpart of `noise.py`.

One step t turns a code into [MASK] with probability γ_t, into any of the K codes with
probability β_t each, and keeps it otherwise (α_t + β_t in all: α_t = 1 − K·β_t − γ_t); [MASK]
stays [MASK]. With [Q_t]_{mn} = q(x_t = m | x_{t−1} = n) (Eq. 5):

    Q_t = [[α_t·I + β_t·11ᵀ, 0], [γ_t·1ᵀ, 1]]   ((K+1)×(K+1), columns sum to 1)

The cumulative Q̄_t = Q_t ⋯ Q_1 has the same form (Eq. 7) with ᾱ_t = ∏ α_i, γ̄_t = 1 − ∏(1 − γ_i)
and β̄_t = (1 − ᾱ_t − γ̄_t)/K, and so has the transition from any s < t to t (α = ᾱ_t/ᾱ_s,
1 − γ = (1 − γ̄_t)/(1 − γ̄_s)), which is what lets the reverse process skip steps. Every
probability here is computed in that closed form in O(K) per token, never as a matrix product;
`one_step_matrix` and `transition_matrix` build the matrices for the tests that check the closed form.

Shapes: codes x are (B, N) integers in 0 … K (N tokens: the h·w code positions); distributions
over a token are (B, K+1, N) (or (B, K, N) over the codes alone). Pure tensor maths, float64
tables.
"""

from dataclasses import dataclass

import torch

from latentdiff.config_diffusion import MaskReplaceConfig

Generators = torch.Generator | list[torch.Generator] | None


@dataclass(frozen=True)
class Transition:
    """q(x_t | x_s) for s < t: keep with α + β, any code with β, [MASK] with γ (α + K·β + γ = 1).
    Scalars or (B,) tensors (one per sample)."""

    alpha: torch.Tensor
    beta: torch.Tensor
    gamma: torch.Tensor

    def per_sample(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(α, β, γ), each (B, 1, 1) float64 on x's device, to broadcast over (B, K, N) for the
        codes x (B, N)."""
        return tuple(v.double().reshape(-1, 1, 1).expand(x.shape[0], 1, 1).to(x.device)
                     for v in (self.alpha, self.beta, self.gamma))


class MaskReplaceSchedule:
    """ᾱ_t and γ̄_t for t = 0 … T (ᾱ_0 = 1, γ̄_0 = 0): γ̄ rises linearly to `gamma_bar_end` and ᾱ falls
    linearly from 1 to `alpha_bar_end` (the paper's schedule, Sec. 4.1: 0.9 and 9e-6 at T = 100)."""

    def __init__(self, cfg: MaskReplaceConfig, num_codes: int):
        self.cfg, self.K, self.T = cfg, num_codes, cfg.num_timesteps
        steps = torch.arange(self.T + 1, dtype=torch.float64) / self.T
        self.alpha_bar = 1 + steps * (cfg.alpha_bar_end - 1)
        self.gamma_bar = steps * cfg.gamma_bar_end

    def transition(self, s: torch.Tensor | int, t: torch.Tensor | int) -> Transition:
        """The (α, β, γ) of q(x_t | x_s), 0 ≤ s < t ≤ T: α = ᾱ_t/ᾱ_s, γ = 1 − (1 − γ̄_t)/(1 − γ̄_s)."""
        s, t = torch.as_tensor(s).cpu(), torch.as_tensor(t).cpu()  # the tables live on the CPU
        alpha = self.alpha_bar[t] / self.alpha_bar[s]
        gamma = 1 - (1 - self.gamma_bar[t]) / (1 - self.gamma_bar[s])
        return Transition(alpha, (1 - alpha - gamma) / self.K, gamma)

    def q_probs(self, x: torch.Tensor, s, t) -> torch.Tensor:
        """q(x_t | x_s = x): (B, N) codes at s → (B, K+1, N) probabilities (Eq. 7 from s)."""
        a, b, g = self.transition(s, t).per_sample(x)
        probs = b.expand(-1, self.K, x.shape[1]).clone()
        probs = torch.cat([probs, g.expand(-1, 1, x.shape[1])], dim=1)
        probs.scatter_add_(1, x[:, None], a.expand(-1, 1, x.shape[1]).clone())
        masked = x == self.K  # [MASK] is absorbing
        return torch.where(masked[:, None], onehot(x, self.K + 1), probs)

    def q_sample(self, x0: torch.Tensor, t, generator: Generators = None) -> torch.Tensor:
        """x_t ~ q(x_t | x_0): (B, N) codes → (B, N) codes or [MASK] (`draw`'s generators)."""
        return draw(self.q_probs(x0, 0, t), generator)

    def prior_probs(self) -> torch.Tensor:
        """q(x_T) for uniformly distributed codes: each code β̄_T + ᾱ_T/K, [MASK] γ̄_T, (K+1,)
        float64 (with ᾱ_T ≈ 0, q(x_T | x_0) hardly depends on x_0: the prior of sampling)."""
        tr = self.transition(0, self.T)
        probs = torch.full((self.K + 1,), float(tr.beta + tr.alpha / self.K), dtype=torch.float64)
        probs[self.K] = tr.gamma
        return probs

    def posterior(self, x0_probs: torch.Tensor, x_t: torch.Tensor, s, t) -> torch.Tensor:
        """p(x_s | x_t) = Σ_x0 q(x_s | x_t, x0)·p(x0) for s < t, the reparameterised reverse step
        (Eq. 11; with s < t − 1 it skips steps): x0_probs (B, K, N) over the codes, x_t (B, N) →
        (B, K+1, N). By Bayes, q(x_s | x_t, x0) = q(x_t | x_s)·q(x_s | x0)/q(x_t | x0), so
        p(x_s = k | x_t) = q(x_t | x_s = k)·Σ_x0 q(x_s = k | x0)·w(x0), w = p(x0)/q(x_t | x0)."""
        K = self.K
        w = x0_probs.double() / self.q_probs_all(x_t, t)  # (B, K, N)
        a, b, g = self.transition(0, s).per_sample(x_t)
        mixed = torch.cat([a * w + b * w.sum(1, keepdim=True), g * w.sum(1, keepdim=True)], dim=1)
        a, b, g = self.transition(s, t).per_sample(x_t)
        # q(x_t | x_s = k) for every k: a code x_t comes from itself (α + β) or any code (β), never
        # from [MASK]; [MASK] comes from any code (γ) or from [MASK] (1)
        codes = (x_t < K)[:, None]
        likelihood = torch.where(codes, torch.cat([b.expand_as(w), torch.zeros_like(w[:, :1])], 1)
                                 + a * onehot(x_t, K + 1),
                                 torch.cat([g.expand_as(w), torch.ones_like(w[:, :1])], 1))
        joint = likelihood * mixed
        return (joint / joint.sum(1, keepdim=True)).to(x0_probs.dtype)

    def q_probs_all(self, x_t: torch.Tensor, t) -> torch.Tensor:
        """q(x_t | x0 = k) for every code k: (B, N) → (B, K, N) (the denominator of the posterior)."""
        a, b, g = self.transition(0, t).per_sample(x_t)
        shape = (x_t.shape[0], self.K, x_t.shape[1])
        codes = (x_t < self.K)[:, None]
        hit = onehot(x_t, self.K + 1)[:, :self.K]
        return torch.where(codes, b.expand(shape) + a * hit, g.expand(shape))


def draw(probs: torch.Tensor, generator: Generators = None,
         uniforms: torch.Tensor | None = None) -> torch.Tensor:
    """One category per token from probs (B, C, N) → (B, N), by the inverse CDF of a uniform per
    token: `uniforms` (B, N), or drawn with `generator`, which may be a list with one generator per
    sample, so that a sample does not depend on the batch it is drawn in."""
    B, C, N = probs.shape
    if uniforms is not None:
        u = uniforms.double()
    elif isinstance(generator, list):
        if len(generator) != B:
            raise ValueError(f"{len(generator)} generators for a batch of {B}")
        u = torch.stack([torch.rand(N, generator=g, dtype=torch.float64) for g in generator])
    else:
        u = torch.rand(B, N, generator=generator, dtype=torch.float64)
    cdf = probs.double().cumsum(1)
    cdf = cdf / cdf[:, -1:]
    return (cdf < u.to(probs.device)[:, None]).sum(1).clamp(max=C - 1)


def one_step_matrix(schedule: MaskReplaceSchedule, t: int) -> torch.Tensor:
    """Q_t, (K+1, K+1) float64, [Q_t]_{mn} = q(x_t = m | x_{t−1} = n) (Eq. 5)."""
    return transition_matrix(schedule, t - 1, t)


def transition_matrix(schedule: MaskReplaceSchedule, s: int, t: int) -> torch.Tensor:
    """The (K+1, K+1) matrix of q(x_t | x_s) built entry by entry from its (α, β, γ)."""
    K, tr = schedule.K, schedule.transition(s, t)
    Q = torch.zeros(K + 1, K + 1, dtype=torch.float64)
    Q[:K, :K] = tr.alpha * torch.eye(K, dtype=torch.float64) + tr.beta
    Q[K, :K] = tr.gamma
    Q[K, K] = 1
    return Q


def onehot(x: torch.Tensor, classes: int) -> torch.Tensor:
    """(B, N) → (B, classes, N) float64."""
    return torch.nn.functional.one_hot(x, classes).permute(0, 2, 1).double()

