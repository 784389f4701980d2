"""The VQ-regularised autoencoder (paper Sec. 3.1): nearest-code quantisation applied inside the
decoder.

`encode` returns the continuous pre-quantisation latents h = quant_conv(E(x)), the ones the
diffusion model sees; `decode` quantises h to its nearest codes, then decodes. Keys mirror the
original VQModel: encoder.*, quant_conv, quantize.embedding.weight [K, c], post_quant_conv,
decoder.*.
"""

from dataclasses import dataclass

import torch
from torch import nn

from latentdiff.autoencoder.networks import Decoder, Encoder
from latentdiff.autoencoder.pyramid import project
from latentdiff.config import AutoencoderConfig


@dataclass
class Quantized:
    """z_q (B, c, h, w) with straight-through gradient, code `indices` (B, h, w), the per-sample
    (B,) terms codebook = mean‖sg[z] − e‖² and commitment = mean‖z − sg[e]‖² (van den Oord et al.
    2017, Eq. 3), and the pre-quantisation `latents` z."""

    z_q: torch.Tensor
    indices: torch.Tensor
    codebook: torch.Tensor
    commitment: torch.Tensor
    latents: torch.Tensor


class VectorQuantizer(nn.Module):
    """z (B, c, h, w) → nearest of `codebook_size` codes e_k ∈ R^c (Euclidean), with
    straight-through gradient."""

    def __init__(self, codebook_size: int, dim: int):
        super().__init__()
        self.embedding = nn.Embedding(codebook_size, dim)
        # as the original
        nn.init.uniform_(self.embedding.weight, -1.0 / codebook_size, 1.0 / codebook_size)

    @property
    def codebook_size(self) -> int:
        return self.embedding.num_embeddings

    @torch.no_grad()
    def nearest(self, z_flat: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        """argmin_k ‖z − e_k‖² = argmin_k (‖e_k‖² − 2 z·e_k) for z_flat (N, c) → (N,), in chunks of
        rows so that a 16,384-code book stays within memory."""
        # fp32 even under bf16-mixed: ties matter
        with torch.autocast(z_flat.device.type, enabled=False):
            codes = self.embedding.weight.float()
            code_norms = codes.pow(2).sum(1)
            return torch.cat([(code_norms - 2 * rows.float() @ codes.T).argmin(1)
                              for rows in z_flat.split(chunk)])

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Code indices (B, h, w) → code vectors (B, c, h, w)."""
        return self.embedding(indices).permute(0, 3, 1, 2)

    def forward(self, z: torch.Tensor) -> Quantized:
        b, c, h, w = z.shape
        indices = self.nearest(z.permute(0, 2, 3, 1).reshape(-1, c)).view(b, h, w)
        e = self.lookup(indices).to(z.dtype)
        codebook = (z.detach() - e).pow(2).flatten(1).mean(1)
        commitment = (z - e.detach()).pow(2).flatten(1).mean(1)
        return Quantized(z + (e - z).detach(), indices, codebook, commitment, z)


def perplexity(counts: torch.Tensor) -> float:
    """exp(H(p)) of the code frequencies p = counts / Σ counts: the effective number of codes in
    use."""
    p = counts.double() / counts.sum().clamp(min=1)
    return float(torch.exp(-(p * p.clamp(min=1e-12).log()).sum()))


def restart_codes(codes: torch.Tensor, dead: torch.Tensor, candidates: torch.Tensor,
                  generator: torch.Generator) -> torch.Tensor:
    """Dead-code restart (Dhariwal et al. 2020, Jukebox): each code with `dead` (K,) True becomes a
    random row of `candidates` (M, c), recent encoder outputs; the others are kept. Returns the new
    codebook (K, c)."""
    pick = torch.randint(0, len(candidates), (int(dead.sum()),), generator=generator)
    codes = codes.clone()
    codes[dead] = candidates[pick.to(candidates.device)].to(codes)
    return codes


class PointPosterior:
    """The VQ encoder's output seen through the KL posterior's interface: a point mass at h
    (std 0, KL 0), so the latent cache and codec treat both regularisers alike."""

    def __init__(self, h: torch.Tensor):
        self.mean = h
        self.std = torch.zeros_like(h)

    def sample(self, noise: torch.Tensor) -> torch.Tensor:
        return self.mean


class AutoencoderVQ(nn.Module):
    """x (B, C, H, W) in [-1, 1] ⇄ h (B, c, H/f, W/f) pre-quantisation latents; decoding
    quantises. With a feature pyramid (`pyramid_levels` L > 1; Frido's multi-scale VQ), h is
    projected onto the pyramid and every level's c/L channels are quantised on their own, against
    one codebook of c/L-dimensional codes shared by the levels (`quantize_latents`)."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        self.config = cfg
        c = cfg.latent_channels
        self.encoder = Encoder(cfg, out_channels=c)
        self.decoder = Decoder(cfg)
        self.quant_conv = nn.Conv2d(c, c, 1)
        self.quantize = VectorQuantizer(cfg.codebook_size, c // cfg.pyramid_levels)
        self.post_quant_conv = nn.Conv2d(c, c, 1)

    def encode(self, x: torch.Tensor) -> PointPosterior:
        return PointPosterior(project(self.quant_conv(self.encoder(x)), self.config.pyramid_levels))

    def quantize_latents(self, h: torch.Tensor) -> Quantized:
        """h (B, c, h, w) → its codes: one level's c/L channels per code, so `indices` is
        (B, L·h, w) and `latents` (B, c/L, L·h, w) (the levels stacked along the height); z_q is
        (B, c, h, w). With one level, `quantize(h)`."""
        L = self.config.pyramid_levels
        if L == 1:
            return self.quantize(h)
        b, c, hh, ww = h.shape
        stacked = h.reshape(b, L, c // L, hh, ww).transpose(1, 2).reshape(b, c // L, L * hh, ww)
        q = self.quantize(stacked)
        z_q = q.z_q.reshape(b, c // L, L, hh, ww).transpose(1, 2).reshape(b, c, hh, ww)
        return Quantized(z_q, q.indices, q.codebook, q.commitment, q.latents)

    def decode_codes(self, z_q: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(z_q))

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        """Quantise the latents h (B, c, h, w) to their nearest codes, then D(·) → (B, C, H, W)."""
        return self.decode_codes(self.quantize_latents(h).z_q)

    def forward(self, x: torch.Tensor,
                noise: torch.Tensor | None = None) -> tuple[torch.Tensor, Quantized]:
        """Reconstruction D(q(h)) and the quantiser's output (`noise` is ignored: VQ encoding is
        deterministic)."""
        quantized = self.quantize_latents(self.encode(x).mean)
        return self.decode_codes(quantized.z_q), quantized
