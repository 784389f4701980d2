"""Reconstruction quality of a first stage (the paper's Table 8): PSNR, SSIM, LPIPS (given weights),
the reconstruction Fréchet distance rFD in the project's evaluator features, and VQ codebook usage.

The reference row is bicubic down- and up-sampling by the same f, which keeps H/f × W/f × C values
per image (as many as a c = C latent).
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from latentdiff.autoencoder import Autoencoder, AutoencoderVQ
from latentdiff.autoencoder.perceptual import psnr, ssim
from latentdiff.autoencoder.vq import perplexity
from latentdiff.metrics.frechet import FeatureStats, frechet_distance

Features = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ReconstructionRow:
    """One line of the table: what was measured and on how many images (`n`)."""

    name: str
    f: int
    c: int | None
    regularizer: str
    params: int | None
    n: int
    psnr: float
    ssim: float
    rfd: float | None = None
    lpips: float | None = None
    codebook_usage: float | None = None  # fraction of codes used by these images (VQ)
    perplexity: float | None = None


@torch.no_grad()
def reconstruct(autoencoder: Autoencoder, x: torch.Tensor, batch_size: int = 64,
                decode: Callable | None = None, encode: Callable | None = None) -> torch.Tensor:
    """D(E(x)) with the posterior mean, clamped; x (N, C, H, W) in [-1, 1] on the model's device.
    `encode`/`decode` replace the plain calls (e.g. by tiled ones)."""
    encode = encode or (lambda t: autoencoder.encode(t).mean)
    decode = decode or autoencoder.decode
    return torch.cat([decode(encode(x[i:i + batch_size])).clamp(-1, 1)
                      for i in range(0, len(x), batch_size)])


def bicubic_roundtrip(x: torch.Tensor, f: int) -> torch.Tensor:
    """Antialiased bicubic ↓f then bicubic ↑f, clamped to [-1, 1]."""
    h, w = x.shape[-2:]
    small = F.interpolate(x, size=(h // f, w // f), mode="bicubic",
                          antialias=True, align_corners=False)
    return F.interpolate(small, size=(h, w), mode="bicubic", align_corners=False).clamp(-1, 1)


@torch.no_grad()
def codebook_usage(autoencoder: AutoencoderVQ, x: torch.Tensor,
                   batch_size: int = 64) -> tuple[float, float]:
    """(fraction of the codebook used, perplexity) over the codes of all images x."""
    k = autoencoder.quantize.codebook_size
    counts = torch.zeros(k, dtype=torch.long)
    for i in range(0, len(x), batch_size):
        indices = autoencoder.quantize_latents(autoencoder.encode(x[i:i + batch_size]).mean).indices
        counts += torch.bincount(indices.flatten().cpu(), minlength=k)
    return (counts > 0).float().mean().item(), perplexity(counts)


@torch.no_grad()
def score_reconstructions(x: torch.Tensor, recon: torch.Tensor, features: Features | None = None,
                          lpips: Callable | None = None, batch_size: int = 64) -> dict[str, float]:
    """Mean PSNR, SSIM (and LPIPS) over images, and rFD = FD(features(x), features(recon)) when
    `features` is set."""
    def mean_of(fn: Callable) -> float:
        return torch.cat([fn(x[i:i + batch_size], recon[i:i + batch_size]).cpu()
                          for i in range(0, len(x), batch_size)]).mean().item()

    scores = {"psnr": mean_of(psnr), "ssim": mean_of(ssim)}
    if lpips is not None:
        scores["lpips"] = mean_of(lpips)
    if features is not None:
        real, fake = (torch.cat([features(t[i:i + batch_size]).cpu()
                                 for i in range(0, len(t), batch_size)])
                      for t in (x, recon))
        scores["rfd"] = frechet_distance(FeatureStats.of(real), FeatureStats.of(fake))
    return scores


def format_table(rows: list[ReconstructionRow]) -> str:
    """A plain-text table like the paper's Table 8 (— where a value does not apply)."""
    header = ("model", "f", "c", "reg.", "params", "n", "PSNR", "SSIM", "rFD", "LPIPS",
              "codes used", "perplexity")

    def cell(value, fmt: str) -> str:
        return "—" if value is None else format(value, fmt)

    lines = [[r.name, str(r.f), cell(r.c, "d"), r.regularizer,
              cell(r.params and r.params / 1e6, ".2f") +
              ("M" if r.params else ""), str(r.n), f"{r.psnr:.2f}",
              f"{r.ssim:.3f}", cell(r.rfd, ".3f"),
              cell(r.lpips, ".3f"), cell(r.codebook_usage and 100 * r.codebook_usage, ".1f") +
              ("%" if r.codebook_usage is not None else ""), cell(r.perplexity, ".0f")]
             for r in rows]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join([fmt.format(*header), fmt.format(*("-" * w for w in widths)),
                      *(fmt.format(*line) for line in lines)])
