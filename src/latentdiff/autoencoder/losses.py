"""First-stage training loss (SPEC §1). Now: L1 + KL; the perceptual and adversarial terms join here (issue 3)."""

import torch

from latentdiff.autoencoder.kl import DiagonalGaussian
from latentdiff.config import AutoencoderLossConfig


def autoencoder_loss(x: torch.Tensor, recon: torch.Tensor, posterior: DiagonalGaussian,
                     cfg: AutoencoderLossConfig) -> dict[str, torch.Tensor]:
    """Per-sample terms (B,) and their weighted sum under "loss".

    L = l1_weight·mean|x − x̃| + kl_weight·KL/(C·H·W): the original sums both over pixels; dividing both by the pixel
    count keeps its ratio (so kl_weight ≈ 1e-6 means the same) at a learning-rate-friendly scale.
    x, recon: (B, C, H, W) in [-1, 1].
    """
    l1 = (x - recon).abs().flatten(1).mean(1)
    kl = posterior.kl() / x[0].numel()
    return {"loss": cfg.l1_weight * l1 + cfg.kl_weight * kl, "l1": l1, "kl": kl}
