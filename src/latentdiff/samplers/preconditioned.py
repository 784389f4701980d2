"""Target-distribution-aware sampling (TDAS; Ma et al. 2022, "Accelerating score-based generative
models for high-resolution image synthesis", and their preconditioned diffusion sampling, ECCV 2022):
the stochastic sampler's score step and noise are preconditioned by a fixed linear operator M built
from the target's statistics, so that directions the data barely uses (weak frequencies, dim pixels)
move faster.

With F the orthonormal 2-D DFT, R a real filter over the frequencies and S one over the positions
(both (c, h, w), ≥ 1), M = F⁻¹·R·F·S: the score term is multiplied by M·Mᵀ = F⁻¹RF·S²·F⁻¹RF and the
fresh noise by M. Langevin dynamics dx = M·Mᵀ·∇log p dt + √2·M dW keeps p stationary for any fixed
invertible M (their Theorem 1), so the Langevin corrector still targets p_σ; the predictor becomes a
reverse SDE whose weak directions run faster.

The filters are PDS's: from the target's mean power |F x|² (per channel and frequency, taken as
log(1 + ·)) and mean square x² (per channel and position), each normalised to a maximum of 1 as m,
the filter is α/(m + α − 1), between 1 (the strongest component) and α/(α − 1) (one that is absent).

The sampler is Euler–Maruyama on the reverse VE SDE in σ (Song et al. 2021, "reverse diffusion"):
x ← x + (σ² − σ_next²)·M·Mᵀ·∇log p(x; σ) + √(σ² − σ_next²)·M·n, ∇log p = (D(x; σ) − x)/σ², with an
optional Langevin corrector of `corrector_steps` steps at signal-to-noise ratio `snr` before each
step (their predictor–corrector sampler: ε = 2·(snr·‖M·n‖/‖M·Mᵀ·∇log p‖)² per sample), and the
last step to σ = 0 taken as x ← D(x; σ).
Without a preconditioner it is the plain sampler, which is the comparison TDAS is measured against.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch

from latentdiff.conditioning import Cond
from latentdiff.samplers.ancestral import report_step
from latentdiff.samplers.randomness import Generators, randn_like


@dataclass(frozen=True)
class Preconditioner:
    """M = F⁻¹·R·F·S for images (B, c, h, w): `frequency` R and `space` S, each (c, h, w) or None
    (the identity). R must be symmetric under frequency negation (a real image's spectrum is), so
    that F⁻¹·R·F maps real images to real images."""

    frequency: torch.Tensor | None = None
    space: torch.Tensor | None = None

    @classmethod
    def of_statistics(cls, power: torch.Tensor | None, square: torch.Tensor | None,
                      alpha: float = 5.0) -> "Preconditioner":
        """The PDS filters α/(m + α − 1) of the mean power spectrum `power` (taken as log(1 + ·))
        and the mean square `square`, each (c, h, w) and normalised to a maximum m = 1."""
        if alpha <= 1:
            raise ValueError(f"alpha={alpha} must be > 1")

        def filter_of(statistic: torch.Tensor | None) -> torch.Tensor | None:
            if statistic is None:
                return None
            m = statistic / statistic.max()
            return alpha / (m + alpha - 1)
        return cls(filter_of(None if power is None else torch.log1p(power)), filter_of(square))

    def _frequency(self, x: torch.Tensor) -> torch.Tensor:
        if self.frequency is None:
            return x
        spectrum = torch.fft.fft2(x, norm="ortho") * self.frequency.to(x.device)
        return torch.fft.ifft2(spectrum, norm="ortho").real.to(x.dtype)

    def _space(self, x: torch.Tensor, power: int = 1) -> torch.Tensor:
        return x if self.space is None else x * self.space.to(x) ** power

    def check(self, x: torch.Tensor) -> None:
        for name, value in (("frequency", self.frequency), ("space", self.space)):
            if value is not None and tuple(value.shape) != tuple(x.shape[1:]):
                raise ValueError(f"the {name} filter is {tuple(value.shape)}, the samples "
                                 f"{tuple(x.shape[1:])}; compute the statistics at the sampling size")

    def noise(self, n: torch.Tensor) -> torch.Tensor:
        """M·n."""
        return self._frequency(self._space(n))

    def drift(self, g: torch.Tensor) -> torch.Tensor:
        """M·Mᵀ·g = F⁻¹RF·S²·F⁻¹RF·g."""
        return self._frequency(self._space(self._frequency(g), 2))


def target_statistics(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean |F x|² per channel and frequency, mean x² per channel and position) of target samples
    x (N, c, h, w): the statistics `Preconditioner.of_statistics` filters are made from."""
    x = x.double()
    return torch.fft.fft2(x, norm="ortho").abs().pow(2).mean(0), x.pow(2).mean(0)


@torch.no_grad()
def sample_reverse_sde(denoiser: Callable, x: torch.Tensor, sigmas: torch.Tensor, *,
                       cond: Cond | None = None, corrector_steps: int = 0, snr: float = 0.16,
                       preconditioner: Preconditioner | None = None, generator: Generators = None,
                       callback: Callable | None = None) -> torch.Tensor:
    """First order, 1 + corrector_steps NFE per step, stochastic. x (B, ...) at σ_0; with a
    `preconditioner`, x is (B, c, h, w)."""
    if corrector_steps < 0 or snr <= 0:
        raise ValueError(f"corrector_steps={corrector_steps} must be ≥ 0 and snr={snr} > 0")
    if preconditioner is not None and not isinstance(preconditioner, Preconditioner):
        raise ValueError("preconditioner must be a samplers.Preconditioner (from Python; "
                         "`Preconditioner.of_statistics`)")
    m = preconditioner or Preconditioner()
    m.check(x)

    def score(x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        denoised = denoiser(x, sigma, cond)
        return (denoised - x) / sigma ** 2, denoised

    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        for _ in range(corrector_steps):  # Langevin at σ (Song et al. 2021, Alg. 4/5)
            grad = m.drift(score(x, sigma)[0])
            noise = m.noise(randn_like(x, generator))
            step = 2 * (snr * _norm(noise) / _norm(grad)) ** 2  # per sample
            x = x + step * grad + (2 * step).sqrt() * noise
        grad, denoised = score(x, sigma)
        if sigma_next == 0:
            x = denoised
        else:
            variance = sigma ** 2 - sigma_next ** 2
            x = x + variance * m.drift(grad) + variance.sqrt() * m.noise(randn_like(x, generator))
        report_step(callback, i, x, sigma, denoised)
    return x


def _norm(v: torch.Tensor) -> torch.Tensor:
    """Each sample's L2 norm, (B, 1, …) to broadcast over v (B, …); score_sde's corrector takes
    the batch's mean instead, which would make a sample depend on its batch."""
    return v.flatten(1).norm(dim=1).reshape(-1, *[1] * (v.ndim - 1))
