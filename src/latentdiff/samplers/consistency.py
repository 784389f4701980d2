"""Multistep consistency sampling (Song et al. 2023, Alg. 1; LCM's scheduler, Luo et al. 2023).

With a consistency function f (a `consistency.ConsistencyDenoiser`), each step maps x at σ_i to its
origin x̂₀ = f(x, σ_i) in one evaluation and noises it afresh to the next level,
x_{i+1} = x̂₀ + σ_{i+1}·n, n ~ N(0, I); the last step (to σ = 0) returns x̂₀. One step is one-step
generation; more steps trade evaluations for quality. With a plain diffusion denoiser it is a valid
but poor sampler (x̂₀ = E[z_0 | x] is renoised, not followed).
"""

from collections.abc import Callable

import torch

from latentdiff.conditioning import Cond
from latentdiff.samplers.ancestral import report_step
from latentdiff.samplers.randomness import Generators, randn_like


@torch.no_grad()
def sample_consistency(denoiser: Callable, x: torch.Tensor, sigmas: torch.Tensor, *,
                       cond: Cond | None = None, generator: Generators = None,
                       callback: Callable | None = None) -> torch.Tensor:
    """x (B, ...) at sigmas[0] → the sample at sigmas[-1]: x̂₀ when the grid ends at 0, else
    x̂₀ + σ_end·n (1 NFE per step)."""
    for i in range(len(sigmas) - 1):
        x0 = denoiser(x, sigmas[i], cond)
        x = x0 + sigmas[i + 1] * randn_like(x0, generator) if sigmas[i + 1] > 0 else x0
        report_step(callback, i, x, sigmas[i], x0)
    return x
