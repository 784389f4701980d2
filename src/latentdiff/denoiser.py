"""Denoisers D(x; σ, cond) ≈ E[x_0 | x] in the variance-exploding view x = z_0 + σ·n that every
sampler uses.

`Denoiser` wraps a network F_θ with a preconditioning (`preconditioning.py`, Karras et al. 2022, Eq.
7): D(x; σ) = c_skip(σ)·x + c_out(σ)·F_θ(c_in(σ)·x; c_noise(σ)). For the paper's discrete-time
networks (Sec. 3.2) that is the step from x to z_t = x/√(1 + σ²) at t(σ) and from ε̂, x̂₀ or v̂ back
to x̂₀. Guidance, masking and image guidance wrap a denoiser into a denoiser.
"""

import torch
from torch import nn

from latentdiff.conditioning import Cond
from latentdiff.errors import UserError
from latentdiff.preconditioning import Preconditioning, append_dims


def per_sample_sigma(sigma: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """σ (scalar or (B,)) → float32 (B,) on x's device."""
    return torch.as_tensor(sigma, device=x.device, dtype=torch.float32).expand(x.shape[0])


class DenoiserWrapper:
    """A denoiser built on another: attributes it does not define (precond, prior_std, ...) are the
    wrapped one's."""

    # set by each wrapper; the class default keeps __getattr__ from recursing before that
    denoiser = None

    def __getattr__(self, name):
        return getattr(self.denoiser, name)


class Denoiser:
    """D(x; σ, cond) = c_skip·x + c_out·net(c_in·x, c_noise, **cond) for a network
    `net(x, noise_level, **cond)`."""

    def __init__(self, net: nn.Module, precond: Preconditioning):
        self.net, self.precond = net, precond

    def network_output(self, x: torch.Tensor, sigma: torch.Tensor,
                       cond: Cond | None = None) -> torch.Tensor:
        """F_θ(c_in(σ)·x; c_noise(σ)) for x (B, ...) and sigma (B,): the network's own output
        (ε̂, x̂₀ or v̂)."""
        c_in = append_dims(self.precond.c_in(sigma), x)
        return self.net(c_in * x, self.precond.c_noise(sigma), **(cond or Cond()).network_kwargs())

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float,
                 cond: Cond | None = None) -> torch.Tensor:
        """x (B, ...) in VE scale, sigma scalar or (B,) → x̂_0 (B, ...) in x's dtype."""
        sigma = per_sample_sigma(sigma, x)
        c_skip, c_out = (append_dims(c(sigma), x) for c in (self.precond.c_skip,
                                                            self.precond.c_out))
        return c_skip * x + c_out * self.network_output(x, sigma, cond).to(x.dtype)

    def prior_std(self, sigma_max: torch.Tensor | float) -> float:
        """The std of x at σ_max where sampling starts (√(1 + σ_max²) for a VP model: z_T ~
        N(0, I))."""
        return self.precond.prior_std(sigma_max)

    def start(self, noise: torch.Tensor, sigma_max: torch.Tensor,
              known: torch.Tensor | None = None) -> torch.Tensor:
        """x where a sampler starts at σ_max from standard normal `noise` (B, ...): a draw of the
        prior, or, from a known latent z₀ (img2img, SDEdit), z₀ + σ_max·noise."""
        return noise * self.prior_std(sigma_max) if known is None else known + sigma_max * noise

    def latent(self, x: torch.Tensor, sigma_end: torch.Tensor) -> torch.Tensor:
        """The latent the decoder reads for a sample x that stops at σ_end (x/√(1 + σ_end²) for a VP
        model, what CompVis's DDIM returns there; x itself at σ_end = 0)."""
        return self.precond.latent(x, sigma_end)


def in_interval(sigma: torch.Tensor, interval: tuple[float, float] | None) -> torch.Tensor:
    """(B,) bool: σ within [σ_lo, σ_hi] (everywhere without an interval)."""
    if interval is None:
        return torch.ones_like(sigma, dtype=torch.bool)
    return (sigma >= interval[0]) & (sigma <= interval[1])


def check_guidance(scale: float, rescale: float = 0.0,
                   interval: tuple[float, float] | None = None) -> None:
    """One-line errors for guidance settings `GuidedDenoiser` cannot use."""
    if scale < 0 or not 0.0 <= rescale <= 1.0:
        raise UserError(f"guidance scale {scale} must be ≥ 0 and guidance rescale "
                        f"{rescale} in [0, 1]")
    if interval is not None and not 0 <= interval[0] < interval[1]:
        raise UserError(f"guidance interval {list(interval)} must be σ_lo σ_hi with 0 "
                        "≤ σ_lo < σ_hi")


class GuidedDenoiser(DenoiserWrapper):
    """Classifier-free guidance (Ho & Salimans 2022) as a denoiser:
    D̃ = D(x; u) + s·(D(x; c) − D(x; u)).

    `uncond` is the null condition (empty prompt, null class) or a negative prompt's; cond and
    uncond are evaluated in one batched forward pass. `rescale` φ (Lin et al. 2024, Eq. 15–16) pulls
    the guided ε̂ back towards the standard deviation of the conditional ε̂: ε ←
    φ·ε·std(ε_c)/std(ε) + (1 − φ)·ε, which tames over-exposure at large s. `interval` (σ_lo, σ_hi)
    guides only there and is the plain conditional denoiser elsewhere (Kynkäänniemi et al. 2024:
    guidance at high σ costs diversity, at low σ it does little). s = 1 is the plain conditional
    denoiser (one pass).
    """

    def __init__(self, denoiser, uncond: Cond, scale: float, rescale: float = 0.0,
                 interval: tuple[float, float] | None = None):
        check_guidance(scale, rescale, interval)
        self.denoiser, self.uncond, self.scale, self.rescale = denoiser, uncond, scale, rescale
        self.interval = interval

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor,
                 cond: Cond | None = None) -> torch.Tensor:
        sigma = per_sample_sigma(sigma, x)
        active = in_interval(sigma, self.interval)
        if self.scale == 1.0 or not active.any():
            return self.denoiser(x, sigma, cond)
        d_cond, d_uncond = self.branches(x, sigma, cond)
        guided = extrapolate(x, sigma, d_cond, d_uncond, self.scale, self.rescale)
        return torch.where(append_dims(active, x), guided, d_cond)

    def branches(self, x: torch.Tensor, sigma: torch.Tensor,
                 cond: Cond | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(the guided denoiser D(x; c), the reference it is pushed away from: D(x; u)), in one
        batched forward pass."""
        return self.batched(x, sigma, cond, self.uncond)

    def batched(self, x: torch.Tensor, sigma: torch.Tensor, cond: Cond | None,
                uncond: Cond) -> tuple[torch.Tensor, torch.Tensor]:
        """(D(x; cond), D(x; uncond)) in one batched forward pass."""
        both = self.denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]), (cond or Cond()).cat(uncond))
        return both.chunk(2)


def extrapolate(x: torch.Tensor, sigma: torch.Tensor, d_main: torch.Tensor, d_ref: torch.Tensor,
                scale: float, rescale: float = 0.0) -> torch.Tensor:
    """D_ref + s·(D_main − D_ref), with the std rescale φ of `GuidedDenoiser` when φ > 0."""
    guided = d_ref + scale * (d_main - d_ref)
    if rescale > 0.0:
        s = append_dims(sigma, x)
        eps_main, eps = (x - d_main) / s, (x - guided) / s
        ratio = eps_main.flatten(1).std(1) / eps.flatten(1).std(1).clamp_min(1e-12)
        eps = rescale * eps * append_dims(ratio, x) + (1 - rescale) * eps
        guided = x - s * eps
    return guided


class ImageGuidedDenoiser(DenoiserWrapper):
    """Post-hoc image guidance of an unconditional model (paper Sec. 4.4 / App. D):
    D̃(x; σ) = D(x; σ) + σ²·∇_x log p(y | T(dec(D(x; σ)))), with the Gaussian guider
    log p(y | ·) = −scale/2 · Σ (y − T(dec(x̂₀)))² / (number of target pixels per image).

    In ε terms this is the paper's ε̃ = ε̂ − √(1−ᾱ_t)·∇_{z_t} log p (x = z_t/√ᾱ_t,
    σ = √(1−ᾱ_t)/√ᾱ_t). `decode` maps latents (B, c, h, w) to images in [-1, 1]; T resizes to the
    target's size (antialiased bicubic), so the target y (B, C, h', w') in [-1, 1] can be a small
    image whose layout a large sample must follow.
    """

    def __init__(self, denoiser, decode, target: torch.Tensor, scale: float):
        if scale < 0:
            raise ValueError(f"image guidance scale {scale} must be ≥ 0")
        self.denoiser, self.decode, self.target, self.scale = denoiser, decode, target, scale

    def transform(self, images: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(images, size=self.target.shape[-2:],
                                               mode="bicubic", antialias=True,
                                               align_corners=False)

    def log_density(self, denoised: torch.Tensor) -> torch.Tensor:
        """log p(y | T(dec(x̂₀))) per sample (B,), up to a constant."""
        residual = self.transform(self.decode(denoised)) - self.target.to(denoised.dtype)
        return -0.5 * self.scale * residual.pow(2).flatten(1).sum(1) / residual[0].numel()

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor,
                 cond: Cond | None = None) -> torch.Tensor:
        denoised, push = tilt(self.denoiser, x, sigma, cond, self.log_density)
        return denoised + push


def tilt(denoiser, x: torch.Tensor, sigma: torch.Tensor, cond: Cond | None,
         log_density) -> tuple[torch.Tensor, torch.Tensor]:
    """(D(x; σ), σ²·∇_x g(D(x; σ))): their sum is the denoiser of p(x; σ)·exp(g), with the guide g
    evaluated on the clean estimate (B,) per sample and differentiated through the denoiser."""
    sigma = per_sample_sigma(sigma, x)
    with torch.enable_grad():
        x_in = x.detach().requires_grad_(True)
        denoised = denoiser(x_in, sigma, cond)
        grad = torch.autograd.grad(log_density(denoised).sum(), x_in)[0]
    return denoised.detach(), append_dims(sigma, x) ** 2 * grad


class MaskedDenoiser(DenoiserWrapper):
    """Inpainting by masked blending, for any model (no inpainting training needed): where mask = 0
    the prediction is the known latent, D̃(x; σ) = m·D(x; σ) + (1 − m)·z_known. Every sampler then
    keeps the known region on the trajectory of z_known + σ·ε and generates the rest consistently
    with it (the x̂₀ form of the per-step blending of Stable Diffusion's and RePaint's samplers,
    without resampling). z_known (B, c, h, w), mask (B, 1, h, w).
    """

    def __init__(self, denoiser, known: torch.Tensor, mask: torch.Tensor):
        self.denoiser, self.known, self.mask = denoiser, known, mask

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor,
                 cond: Cond | None = None) -> torch.Tensor:
        return self.mask * self.denoiser(x, sigma, cond) + (1 - self.mask) * self.known
