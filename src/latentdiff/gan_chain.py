"""The few-step chain of a denoising diffusion GAN (DDGAN; Xiao et al., ICLR 2022), which WaveDiff
(Phung et al., CVPR 2023) runs on wavelet subbands.

With only T = 1 … 8 steps the reverse transition q(x_{k−1} | x_k) is far from Gaussian, so DDGAN
models it implicitly: a generator predicts x̃_0 = G(x_k, z, k) from the noisy x_k and a latent z,
and x_{k−1} is drawn from the Gaussian posterior q(x_{k−1} | x_k, x̃_0), which a discriminator
D(x_{k−1}, x_k, k) compares with the data's. The chain (VP, DDPM's notation, k = 0 … T, x_0 the
data):

    ᾱ_k = exp(−½ t_k² (β_max − β_min) − t_k β_min),  t_k = k/T  (ᾱ_0 = 1),
    α_k = ᾱ_k / ᾱ_{k−1},  β_k = 1 − α_k,
    q(x_k | x_0) = N(√ᾱ_k x_0, (1 − ᾱ_k) I),  q(x_k | x_{k−1}) = N(√α_k x_{k−1}, β_k I),
    q(x_{k−1} | x_k, x_0) = N(c0_k x_0 + ck_k x_k, β̃_k I),
    c0_k = √ᾱ_{k−1} β_k / (1 − ᾱ_k),  ck_k = √α_k (1 − ᾱ_{k−1}) / (1 − ᾱ_k),
    β̃_k = β_k (1 − ᾱ_{k−1}) / (1 − ᾱ_k)

(the continuous VP SDE of Song et al. 2021 sampled at T evenly spaced times, as DDGAN's).
"""

import torch

from latentdiff.errors import UserError


class GANChainSchedule:
    """The T-step VP chain above; tensors of length T + 1 indexed by k (index 0: the data)."""

    def __init__(self, T: int, beta_min: float = 0.1, beta_max: float = 20.0):
        if T < 1:
            raise UserError(f"num_timesteps={T} must be ≥ 1")
        if not 0 <= beta_min < beta_max:
            raise UserError(f"need 0 ≤ beta_min < beta_max (got {beta_min}, {beta_max})")
        self.T, self.beta_min, self.beta_max = T, beta_min, beta_max
        t = torch.arange(T + 1, dtype=torch.float64) / T
        self.alphas_cumprod = torch.exp(-0.5 * t ** 2 * (beta_max - beta_min) - t * beta_min)
        alphas = torch.ones(T + 1, dtype=torch.float64)
        alphas[1:] = self.alphas_cumprod[1:] / self.alphas_cumprod[:-1]
        self.alphas, self.betas = alphas, 1 - alphas
        prev = torch.cat([self.alphas_cumprod[:1], self.alphas_cumprod[:-1]])
        denom = (1 - self.alphas_cumprod).clamp_min(1e-20)
        self.posterior_x0 = prev.sqrt() * self.betas / denom
        self.posterior_xk = alphas.sqrt() * (1 - prev) / denom
        self.posterior_variance = self.betas * (1 - prev) / denom
        self.posterior_x0[0], self.posterior_xk[0], self.posterior_variance[0] = 1.0, 0.0, 0.0

    def _at(self, values: torch.Tensor, k: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """values[k] as (B, 1, 1, 1) in like's dtype and device."""
        return values.to(like.device)[k.to(like.device)].to(like.dtype).view(-1, 1, 1, 1)

    def marginal(self, x0: torch.Tensor, k: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """A draw of q(x_k | x_0) = √ᾱ_k x_0 + √(1 − ᾱ_k) n: x0, noise (B, …), k (B,) in 0 … T."""
        a = self._at(self.alphas_cumprod, k, x0)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def step(self, x_prev: torch.Tensor, k: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """A draw of q(x_k | x_{k−1}) = √α_k x_{k−1} + √β_k n, k (B,) in 1 … T."""
        return (self._at(self.alphas, k, x_prev).sqrt() * x_prev
                + self._at(self.betas, k, x_prev).sqrt() * noise)

    def posterior(self, x0: torch.Tensor, x_k: torch.Tensor, k: torch.Tensor,
                  noise: torch.Tensor) -> torch.Tensor:
        """A draw of q(x_{k−1} | x_k, x_0), k (B,) in 1 … T; at k = 1 it is x_0 itself."""
        mean = self._at(self.posterior_x0, k, x0) * x0 + self._at(self.posterior_xk, k, x0) * x_k
        return mean + self._at(self.posterior_variance, k, x0).sqrt() * noise

    def describe(self) -> dict:
        return {"num_timesteps": self.T, "beta_min": self.beta_min, "beta_max": self.beta_max}

