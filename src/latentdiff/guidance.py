"""The guidance family beyond classifier-free guidance, each a denoiser wrapping a denoiser
D(x; σ) ≈ E[x₀ | x] (`denoiser.py`), so that every sampler and model kind gets it.

With the score ∇ log p(x; σ) = (D(x; σ) − x)/σ² (Tweedie), adding a term g(x) to the log density
adds σ²·∇g to the denoiser:

- `ClassifierGuidedDenoiser` (Dhariwal & Nichol 2021, Sec. 4): D̃ = D + s·σ²·∇_x log p_φ(y | x, σ)
  with a noise-aware classifier p_φ; entropy-aware (Li et al. 2022, EDS) with the per-sample scale
  s·log K / H(p_φ(· | x, σ)), which grows as the classifier becomes sure of half-made images and its
  gradient vanishes.
- `AutoGuidedDenoiser` (Karras et al. 2024): D̃ = D_w + s·(D − D_w), guided away from a weaker
  version of the same model (smaller or less trained) instead of from the unconditional branch.
- `InterleavedGuidedDenoiser` (Re-Imagen, Chen et al. 2022, Sec. 3.2): a retrieval-augmented model
  guided in turn against its two nulls, the empty prompt (text guidance) and the hidden references
  (reference guidance), one per noise level in the ratio η.
- `PriorDenoiser`: a conditional model (super-resolution, inpainting) and an unconditional model
  of the same latent space: D̃ = (1 − w)·D_c + w·D_u, the denoiser of the geometric mixture
  p_c^(1−w)·p_u^w of the two noisy marginals (its score is the weighted sum of theirs). w in (0, 1]
  pulls each step towards the unconditional model's images; w < 0 guides away from it, as
  classifier-free guidance with s = 1 − w does from a model's own unconditional branch.

All take an optional σ interval (Kynkäänniemi et al. 2024) outside which they are the plain
denoiser.
"""

import math

import torch

from latentdiff.conditioning import Cond
from latentdiff.denoiser import (DenoiserWrapper, GuidedDenoiser, check_guidance, in_interval,
                                 per_sample_sigma)
from latentdiff.errors import UserError
from latentdiff.preconditioning import append_dims


def entropy_scale(log_probs: torch.Tensor) -> torch.Tensor:
    """EDS's factor log K / H(p) per sample from log p (B, K): 1 for a uniform prediction, large
    for a confident one (H floored at 1e-6·log K)."""
    k = log_probs.shape[-1]
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    return math.log(k) / entropy.clamp_min(1e-6 * math.log(k))


class ClassifierGuidedDenoiser(DenoiserWrapper):
    """D̃(x; σ) = D(x; σ) + s_i·σ²·∇_x log p_φ(y_i | x, σ) for target classes `labels` (B,), with
    s_i = s, or s·log K / H(p_φ(· | x, σ)) when `entropy_aware`. `classifier(x, σ)` → log
    probabilities (B, K) of VE-scale latents x (a `NoiseClassifier`)."""

    def __init__(self, denoiser, classifier, labels: torch.Tensor, scale: float,
                 entropy_aware: bool = False, interval: tuple[float, float] | None = None):
        check_guidance(scale, 0.0, interval)
        self.denoiser, self.classifier, self.labels = denoiser, classifier, labels
        self.scale, self.entropy_aware, self.interval = scale, entropy_aware, interval

    def gradient(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """s_i·∇_x log p_φ(y_i | x, σ), (B, ...)."""
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            log_probs = self.classifier(x_in, sigma)
            picked = log_probs.gather(1, self.labels.view(-1, 1).to(x.device)).sum()
            grad = torch.autograd.grad(picked, x_in)[0]
        scale = torch.full_like(sigma, self.scale)
        if self.entropy_aware:
            scale = scale * entropy_scale(log_probs.detach()).to(sigma.dtype)
        return append_dims(scale, x) * grad

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor,
                 cond: Cond | None = None) -> torch.Tensor:
        sigma = per_sample_sigma(sigma, x)
        denoised = self.denoiser(x, sigma, cond)
        active = in_interval(sigma, self.interval)
        if self.scale == 0 or not active.any():
            return denoised
        push = append_dims(sigma, x) ** 2 * self.gradient(x, sigma)
        return denoised + append_dims(active, x) * push


class AutoGuidedDenoiser(GuidedDenoiser):
    """Autoguidance: D̃ = D_w(x; c) + s·(D(x; c) − D_w(x; c)) with `weak` a smaller or less-trained
    model of the same latent space, given `weak_cond` (its own encoding of the same condition);
    rescale and interval as for classifier-free guidance."""

    def __init__(self, denoiser, weak, weak_cond: Cond, scale: float, rescale: float = 0.0,
                 interval: tuple[float, float] | None = None):
        super().__init__(denoiser, weak_cond, scale, rescale, interval)
        self.weak = weak

    def branches(self, x: torch.Tensor, sigma: torch.Tensor,
                 cond: Cond | None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.denoiser(x, sigma, cond), self.weak(x, sigma, self.uncond)


def check_interleave_ratio(ratio: float) -> None:
    if not 0.0 <= ratio <= 1.0:
        raise UserError(f"the interleaving ratio η={ratio} must be in [0, 1]")


class InterleavedGuidedDenoiser(GuidedDenoiser):
    """Interleaved classifier-free guidance of a model with two conditions (Re-Imagen, Sec. 3.2):
    D̃ = D(x; u_j) + s·(D(x; c) − D(x; u_j)) with u_j = `uncond` (the text dropped, the references
    kept) at text-guided noise levels and `second` (the references hidden) at the others. Noise
    levels are counted as the sampler reaches them (a call at a σ other than the last call's starts
    the next level); level j is text-guided when ⌊(j + 1)·η⌋ > ⌊j·η⌋, so a share η of the levels
    is, evenly spread (η = 1: text guidance only, η = 0: reference guidance only). Stateful: one
    instance per sampling run."""

    def __init__(self, denoiser, uncond: Cond, second: Cond, ratio: float, scale: float,
                 rescale: float = 0.0, interval: tuple[float, float] | None = None):
        super().__init__(denoiser, uncond, scale, rescale, interval)
        check_interleave_ratio(ratio)
        self.second, self.ratio = second, ratio
        self.level, self.last_sigma = -1, None
        self.text_guided: list[bool] = []  # per noise level reached: text (True) or references

    def branches(self, x: torch.Tensor, sigma: torch.Tensor,
                 cond: Cond | None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.last_sigma is None or not torch.equal(sigma, self.last_sigma):
            self.level, self.last_sigma = self.level + 1, sigma.clone()
            j = self.level
            self.text_guided.append(math.floor((j + 1) * self.ratio) > math.floor(j * self.ratio))
        return self.batched(x, sigma, cond, self.uncond if self.text_guided[-1] else self.second)


class PriorDenoiser(DenoiserWrapper):
    """D̃ = (1 − w)·D_c(x; σ, c) + w·D_u(x; σ, `prior_cond`) for σ in `interval`, with an
    unconditional `prior` D_u of the same latent space: w in (0, 1] pulls the conditional denoiser
    towards it; w < 0 pushes away from it, D_u + s·(D_c − D_u) with s = 1 − w, classifier-free
    guidance whose unconditional branch is the separate model (Phunyaphibarn et al. 2025)."""

    def __init__(self, denoiser, prior, weight: float, prior_cond: Cond | None = None,
                 interval: tuple[float, float] | None = None):
        if not weight <= 1.0:
            raise ValueError(f"prior weight {weight} must be ≤ 1")
        check_guidance(1.0, 0.0, interval)
        self.denoiser, self.prior, self.weight = denoiser, prior, weight
        self.prior_cond, self.interval = prior_cond, interval

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor,
                 cond: Cond | None = None) -> torch.Tensor:
        sigma = per_sample_sigma(sigma, x)
        denoised = self.denoiser(x, sigma, cond)
        active = in_interval(sigma, self.interval)
        if self.weight == 0 or not active.any():
            return denoised
        mixed = torch.lerp(denoised, self.prior(x, sigma, self.prior_cond).to(denoised.dtype),
                           self.weight)
        return torch.where(append_dims(active, x), mixed, denoised)
