"""The first-stage training objective (paper Sec. 3.1):

    L_AE = L_rec(x, x̃) + L_reg + λ·L_adv(x̃),  λ = disc_weight · ‖∇_{G_L} L_rec‖ / (‖∇_{G_L} L_adv‖ + 1e-4),

with G_L the decoder's last layer, and the discriminator's hinge loss (+ optional R1) in
alternation. Every term is a per-pixel mean (the original sums L1 and KL over pixels; dividing both
by the pixel count keeps their ratio, so kl_weight ≈ 1e-6 means the same). Images are (B, C, H, W)
in [-1, 1]; terms are per sample (B,) unless noted.
"""

from collections.abc import Callable

import torch

from latentdiff.autoencoder.discriminator import (PatchDiscriminator,
                                                  feature_matching_loss, generator_adv_loss,
                                                  hinge_d_loss, r1_penalty)
from latentdiff.autoencoder.kl import DiagonalGaussian
from latentdiff.autoencoder.perceptual import focal_frequency_loss, load_lpips, ssim
from latentdiff.autoencoder.vq import Quantized
from latentdiff.config import AutoencoderLossConfig

Perceptual = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def build_perceptual(cfg: AutoencoderLossConfig) -> Perceptual | None:
    """The configured perceptual distance P(x, x̃) → (B,), or None for "none"."""
    if cfg.perceptual == "lpips":
        return load_lpips(cfg.lpips_weights, cfg.vgg16_weights)
    if cfg.perceptual == "ssim":
        return lambda x, y: 1.0 - ssim(x, y)
    if cfg.perceptual == "ffl":
        return focal_frequency_loss
    return None


def reconstruction_terms(x: torch.Tensor, recon: torch.Tensor, cfg: AutoencoderLossConfig,
                         perceptual: Perceptual | None) -> dict[str, torch.Tensor]:
    """L_rec = l1_weight·mean|x − x̃| + perceptual_weight·P(x, x̃)."""
    l1 = (x - recon).abs().flatten(1).mean(1)
    terms = {"l1": l1, "rec": cfg.l1_weight * l1}
    if perceptual is not None:
        terms["perceptual"] = perceptual(x, recon)
        terms["rec"] = terms["rec"] + cfg.perceptual_weight * terms["perceptual"]
    return terms


def regularization_terms(regularizer: DiagonalGaussian | Quantized, cfg: AutoencoderLossConfig,
                         pixels_per_sample: int) -> dict[str, torch.Tensor]:
    """KL: kl_weight·KL(q‖N(0, I))/(C·H·W). VQ:
    codebook_weight·(codebook + commitment_beta·commitment)."""
    if isinstance(regularizer, Quantized):
        reg = cfg.codebook_weight * (regularizer.codebook + cfg.commitment_beta * regularizer.commitment)
        return {"codebook": regularizer.codebook, "commitment": regularizer.commitment, "reg": reg}
    kl = regularizer.kl() / pixels_per_sample
    return {"kl": kl, "reg": cfg.kl_weight * kl}


def adaptive_weight(rec_loss: torch.Tensor, adv_loss: torch.Tensor,
                    last_layer: torch.Tensor) -> torch.Tensor:
    """‖∇_{G_L} L_rec‖ / (‖∇_{G_L} L_adv‖ + 1e-4), clamped to [0, 1e4] and detached (Esser et al.
    2021, Eq. 7)."""
    (g_rec,) = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)
    (g_adv,) = torch.autograd.grad(adv_loss, last_layer, retain_graph=True)
    return (g_rec.norm() / (g_adv.norm() + 1e-4)).clamp(0.0, 1e4).detach()


def generator_loss(x: torch.Tensor, recon: torch.Tensor, regularizer: DiagonalGaussian | Quantized,
                   cfg: AutoencoderLossConfig, perceptual: Perceptual | None,
                   discriminator: PatchDiscriminator | None = None,
                   last_layer: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """All generator terms; "loss" is the scalar to minimise. Pass `discriminator` (and the
    decoder's last-layer weight) only once the discriminator is on (step ≥ disc_start)."""
    terms = {**reconstruction_terms(x, recon, cfg, perceptual),
             **regularization_terms(regularizer, cfg, x[0].numel())}
    loss = terms["rec"].mean() + terms["reg"].mean()
    if discriminator is not None:
        logits, fake_features = discriminator(recon, return_features=True)
        terms["adv"] = generator_adv_loss(logits)
        weight = adaptive_weight(terms["rec"].mean(), terms["adv"].mean(), last_layer)
        terms["adv_weight"] = weight * cfg.disc_weight
        loss = loss + terms["adv_weight"] * terms["adv"].mean()
        if cfg.feature_matching_weight > 0:
            with torch.no_grad():
                _, real_features = discriminator(x, return_features=True)
            terms["feature_matching"] = feature_matching_loss(real_features, fake_features)
            loss = loss + cfg.feature_matching_weight * terms["feature_matching"].mean()
    terms["loss"] = loss
    return terms


def discriminator_loss(discriminator: PatchDiscriminator, x: torch.Tensor, recon: torch.Tensor,
                       cfg: AutoencoderLossConfig) -> dict[str, torch.Tensor]:
    """Hinge loss on real x and detached x̃ in one forward pass, + r1_weight·R1 on the reals; "loss"
    is scalar."""
    real = x.detach().requires_grad_(cfg.r1_weight > 0)
    logits_real, logits_fake = discriminator(torch.cat([real, recon.detach()])).chunk(2)
    terms = {"d_hinge": hinge_d_loss(logits_real, logits_fake),
             "logits_real": logits_real.detach().flatten(1).mean(1),
             "logits_fake": logits_fake.detach().flatten(1).mean(1)}
    loss = terms["d_hinge"].mean()
    if cfg.r1_weight > 0:
        terms["r1"] = r1_penalty(logits_real, real)
        loss = loss + cfg.r1_weight * terms["r1"].mean()
    terms["loss"] = loss
    return terms
