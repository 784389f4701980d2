"""UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of
Diffusion Models"), data-prediction form, B(h) = h ("bh1") or e^h − 1 ("bh2").

Each step predicts with UniP-p from the last p evaluations of D, evaluates D at the prediction, and
— before the next prediction — corrects the sample with UniC-p using that evaluation, so the
corrector costs no extra NFE (the stored D stays the one evaluated at the uncorrected point). In the
VE view (x = z/√ᾱ, λ = −log σ) the VP update's α factors cancel:
  x_t = (σ_t/σ_s)·x_s − (e^{−h} − 1)·D_s − B(−h)·Σ_k ρ_k·(D_k − D_s)/r_k,   r_k = (λ_k − λ_s)/h,
with ρ solving R·ρ = b, R_{jk} = r_k^{j}, b_j = φ_{j+1}(−h)·(j+1)!/B(−h) (paper Alg. 2/3; ρ = ½ for
UniP-2).
"""

from collections.abc import Callable

import torch

from latentdiff.conditioning import Cond
from latentdiff.samplers.ancestral import report_step
from latentdiff.samplers.randomness import Generators

VARIANTS = ("bh1", "bh2")


def _system(rks: torch.Tensor, h: torch.Tensor, order: int, variant: str):
    """(R (order, order), b (order,), B(−h), e^{−h} − 1) of UniP/UniC-order, in float64."""
    hh = -h
    h_phi_1 = torch.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    b_h = hh if variant == "bh1" else torch.expm1(hh)
    rows, b, factorial = [], [], 1
    for k in range(1, order + 1):
        rows.append(rks ** (k - 1))
        b.append(h_phi_k * factorial / b_h)
        factorial *= k + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    return torch.stack(rows), torch.stack(b), b_h, h_phi_1


def _update(x: torch.Tensor, lam_s: torch.Tensor, lam_t: torch.Tensor, d_s: torch.Tensor,
            history: list[tuple[torch.Tensor, torch.Tensor]], order: int, variant: str,
            d_t: torch.Tensor | None = None) -> torch.Tensor:
    """UniP-order from x at λ_s (d_t None), or UniC-order with D evaluated at the prediction (d_t),
    to λ_t. history: (λ_k, D_k) of the earlier evaluations, newest first (order − 1 of them are
    used)."""
    h = (lam_t - lam_s).double()
    used = history[:order - 1]
    rks = torch.stack([((lam_k - lam_s).double() / h) for lam_k, _ in used] + [h.new_ones(())])
    differences = [(d_k - d_s) / r.to(x.dtype) for (_, d_k), r in zip(used, rks)]
    big_r, b, b_h, h_phi_1 = _system(rks, h, order, variant)
    x_t = torch.exp(lam_s - lam_t).to(x.dtype) * x - h_phi_1.to(x.dtype) * d_s
    if d_t is None:  # predictor: ρ for the order − 1 earlier points
        if not differences:
            return x_t
        rhos = h.new_tensor([0.5]) if order == 2 else torch.linalg.solve(big_r[:-1, :-1], b[:-1])
        return x_t - b_h.to(x.dtype) * sum(r.to(x.dtype) * d for r, d in zip(rhos, differences))
    rhos = h.new_tensor([0.5]) if order == 1 else torch.linalg.solve(big_r, b)
    correction = sum((r.to(x.dtype) * d for r, d in zip(rhos[:-1], differences)),
                     torch.zeros_like(x))
    return x_t - b_h.to(x.dtype) * (correction + rhos[-1].to(x.dtype) * (d_t - d_s))


@torch.no_grad()
def sample_unipc(denoiser: Callable, x: torch.Tensor, sigmas: torch.Tensor, *,
                 cond: Cond | None = None,
                 order: int = 2, variant: str = "bh2", lower_order_final: bool = True,
                 generator: Generators = None,
                 callback: Callable | None = None) -> torch.Tensor:
    """UniPC-`order` (predictor order p, corrector order p + 1 in accuracy), 1 NFE per step,
    deterministic. The first steps use lower orders; lower_order_final: the last steps use
    order ≤ steps left (as diffusers); the step to σ = 0 is always x = D."""
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r}; use one of {', '.join(VARIANTS)}")
    if order < 1:
        raise ValueError(f"order={order} must be ≥ 1")
    steps = len(sigmas) - 1
    history: list[tuple[torch.Tensor, torch.Tensor]] = []  # (λ, D), newest first
    x_before = previous_order = None
    for i in range(steps):
        sigma, lam = sigmas[i], -sigmas[i].log()
        denoised = denoiser(x, sigma, cond)
        if x_before is not None:  # UniC: correct the prediction that D was just evaluated at
            lam_s, d_s = history[0]
            x = _update(x_before, lam_s, lam, d_s, history[1:],
                        previous_order, variant, d_t=denoised)
        history = [(lam, denoised)] + history[:order - 1]
        this_order = min(order, steps - i) if lower_order_final else order
        this_order = min(this_order, i + 1)
        x_before = x
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            x = _update(x, lam, -sigmas[i + 1].log(), denoised, history[1:], this_order, variant)
        previous_order = this_order
        report_step(callback, i, x, sigma, denoised)
    return x
