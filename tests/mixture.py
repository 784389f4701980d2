"""A 1-D Gaussian mixture as data: its noisy marginals, exact denoiser and a reference
probability-flow ODE solution.

x0 ~ Σ_k w_k N(μ_k, s_k²); at noise level σ (VE: x = x0 + σ·n) the marginal is Σ_k w_k
N(μ_k, s_k² + σ²) and E[x0 | x] = Σ_k γ_k(x)·(μ_k + s_k²/(s_k² + σ²)·(x − μ_k)), γ_k the posterior
responsibilities. The ODE dx/dσ = (x − D(x; σ))/σ has no closed form for a mixture; `ode_reference`
solves it to ~1e-12 with scipy's DOP853 in s = log σ (dx/ds = x − D).
"""

import numpy as np
import torch
from scipy.integrate import solve_ivp

WEIGHTS = (0.3, 0.7)
MEANS = (-1.0, 0.8)
STDS = (0.25, 0.4)


def mixture_denoiser(x: torch.Tensor, sigma, cond=None) -> torch.Tensor:
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, *[1] * (x.ndim - 1))
    w, mu, s = (torch.tensor(v, dtype=x.dtype) for v in (WEIGHTS, MEANS, STDS))
    var = s ** 2 + sigma[..., None] ** 2  # (B|1, ..., K)
    diff = x[..., None] - mu
    log_resp = w.log() - 0.5 * var.log() - diff ** 2 / (2 * var)
    resp = torch.softmax(log_resp, dim=-1)
    return (resp * (mu + s ** 2 / var * diff)).sum(-1)


def sample_marginal(n: int, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """n draws (float64) of x = x0 + σ·n with x0 from the mixture."""
    k = torch.multinomial(torch.tensor(WEIGHTS, dtype=torch.float64), n,
                          replacement=True, generator=generator)
    x0 = torch.tensor(MEANS, dtype=torch.float64)[k] + torch.tensor(STDS, dtype=torch.float64)[k] * torch.randn(
        n, dtype=torch.float64, generator=generator)
    return x0 + sigma * torch.randn(n, dtype=torch.float64, generator=generator)


def moments() -> tuple[float, float]:
    """Mean and standard deviation of the data distribution."""
    w, mu, s = (np.array(v) for v in (WEIGHTS, MEANS, STDS))
    mean = float((w * mu).sum())
    return mean, float(np.sqrt((w * (s ** 2 + mu ** 2)).sum() - mean ** 2))


def ode_reference(x: torch.Tensor, sigma_from: float, sigma_to: float) -> torch.Tensor:
    """x(σ_to) of the probability-flow ODE from x at σ_from (both > 0), float64, to about 1e-12."""
    def rhs(s, y):
        state = torch.from_numpy(y)
        return (state - mixture_denoiser(state, float(np.exp(s)))).numpy()

    solution = solve_ivp(rhs, (np.log(sigma_from), np.log(sigma_to)),
                         x.double().numpy(), method="DOP853",
                         rtol=1e-12, atol=1e-12)
    return torch.from_numpy(solution.y[:, -1])
