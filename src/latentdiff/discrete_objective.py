"""VQ-Diffusion's training loss (Gu et al., CVPR 2022, Sec. 3.3, Eq. 8 and 12): the variational bound of
the mask-and-replace process with the reverse step reparameterised through a prediction of x_0,
plus the auxiliary cross-entropy of that prediction.

The network gives p_θ(x̃_0 | x_t, y) over the K codes of every token; the reverse step is
p_θ(x_{t−1} | x_t) = Σ_x̃0 q(x_{t−1} | x_t, x̃_0)·p_θ(x̃_0 | x_t) (`MaskReplaceSchedule.posterior`).
Per token:  L_t = KL(q(x_{t−1} | x_t, x_0) ‖ p_θ(x_{t−1} | x_t)) for t > 1, L_1 = −log p_θ(x_0 | x_1),
and L = L_t + λ·(−log p_θ(x̃_0 = x_0 | x_t)) with λ = `aux_weight` (the paper's 5e-4 on its
bound summed over tokens; here both are per-token means, so the same λ weighs the same).
"""

import torch

from latentdiff.discrete_noise import MaskReplaceSchedule, onehot

TINY = 1e-30  # the floor of a probability before its log


def vq_diffusion_loss(schedule: MaskReplaceSchedule, x0: torch.Tensor, x_t: torch.Tensor,
                      t: torch.Tensor, logits: torch.Tensor, aux_weight: float = 5e-4) -> torch.Tensor:
    """x0, x_t: (B, N) codes (x_t may hold [MASK] = K); t: (B,) in 1 … T; logits: (B, K, N) of
    p_θ(x̃_0 | x_t) → (B,) per-sample loss (means over the N tokens)."""
    log_p0 = torch.log_softmax(logits.double(), dim=1)
    nll = -log_p0.gather(1, x0[:, None])[:, 0]  # (B, N): −log p_θ(x̃_0 = x_0 | x_t)
    later = t > 1
    s = (t - 1).clamp(min=0)
    # q(x_{t−1} | x_t, x_0) and p_θ(x_{t−1} | x_t) in one call (shared tables and q(x_t | x_0))
    exact, model = schedule.posterior(torch.cat([onehot(x0, schedule.K), log_p0.exp()]),
                                      x_t.repeat(2, 1), s.repeat(2), t.repeat(2)).chunk(2)
    kl = (torch.xlogy(exact, exact) - exact * model.clamp(min=TINY).log()).sum(1)  # (B, N)
    bound = torch.where(later[:, None], kl, nll)
    return (bound + aux_weight * nll).mean(1).to(logits.dtype)

