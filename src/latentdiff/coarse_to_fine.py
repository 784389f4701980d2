"""Frido's coarse-to-fine denoising (Fan et al., AAAI 2023, Sec. 3.2) over a feature pyramid of
latents (`autoencoder/pyramid.py`): L stages, the coarsest level first; stage s denoises level s's
c/L channels while the levels made before it condition it.

One network serves every stage. Its state x_s (B, c/L, h, w) is level s kept at the finest latent
resolution, constant over blocks of k_s × k_s (k_s = 2^(L−1−s)); concatenated to it (after any
concatenated input of the conditioning kind) are the stage inputs (B, c + L, h, w): the coarser
levels ℓ < s mixed with noise, (1 − τ)·z_ℓ + τ·n_ℓ (Frido's noise mix τ, so that a stage does not
trust its condition blindly: at sampling the condition is the model's own output), zeros in the
other levels' channels, and a one-hot map of s. So the network has in_channels = c/L + k + c + L
(k: the conditioning's concatenated channels) and out_channels = c/L.

A stage's noise has its level's block structure (one N(0, 1) draw per block), so x_s stays on the
level's subspace; the denoiser sees x projected there and its output is projected there too
(`StageDenoiser`; a stochastic sampler's fresh noise is thereby averaged over each block). Training
draws one stage per sample, uniformly; sampling runs the sampler once per stage, coarsest first:
L × steps network evaluations per sample.
"""

import dataclasses
from collections.abc import Callable

import torch
from torch.nn import functional as F

from latentdiff.autoencoder.pyramid import block_sizes, blocks, level_channels, pyramid_noise
from latentdiff.conditioning import Cond
from latentdiff.denoiser import DenoiserWrapper
from latentdiff.errors import UserError
from latentdiff.samplers.randomness import randn_like


def network_channels(latent_channels: int, num_levels: int, concat: int = 0) -> tuple[int, int]:
    """(in_channels, out_channels) of the network of a coarse-to-fine model on latents of c channels
    in L levels, with `concat` concatenated conditioning channels: (c/L + concat + c + L, c/L)."""
    per = latent_channels // num_levels
    return per + concat + latent_channels + num_levels, per


def stage_latents(z: torch.Tensor, stage: torch.Tensor, num_levels: int) -> torch.Tensor:
    """z (B, c, h, w), stage (B,) → each sample's level stage[b], (B, c/L, h, w)."""
    b, c, h, w = z.shape
    per = c // num_levels
    index = stage.view(b, 1) * per + torch.arange(per, device=z.device)
    return z.gather(1, index.view(b, per, 1, 1).expand(b, per, h, w))


def stage_noise(noise: torch.Tensor, stage: torch.Tensor, num_levels: int) -> torch.Tensor:
    """N(0, 1) noise (B, c/L, h, w) → noise with the block structure of each sample's level, still
    N(0, 1) per value."""
    out = noise.clone()
    for s, k in enumerate(block_sizes(num_levels)):
        rows = stage == s
        if k > 1 and rows.any():
            out[rows] = blocks(noise[rows], k, scale=True)
    return out


def stage_inputs(z: torch.Tensor, stage: torch.Tensor, num_levels: int, noise_mix: float,
                 mix_noise: torch.Tensor) -> torch.Tensor:
    """The stage inputs (B, c + L, h, w) of samples at stages `stage` (B,): the levels coarser than
    each one's stage as (1 − τ)·z + τ·n (`mix_noise` n (B, c, h, w) with the pyramid's structure),
    zero in the other channels, then the one-hot map of the stage."""
    b, c, h, w = z.shape
    level = torch.arange(c, device=z.device) // (c // num_levels)
    coarser = (level.view(1, c) < stage.view(b, 1)).to(z.dtype).view(b, c, 1, 1)
    mixed = ((1 - noise_mix) * z + noise_mix * mix_noise) * coarser
    one_hot = F.one_hot(stage, num_levels).to(z.dtype).view(b, num_levels, 1, 1)
    return torch.cat([mixed, one_hot.expand(b, num_levels, h, w)], 1)


def with_stage_inputs(cond: Cond | None, inputs: torch.Tensor, rows: int) -> Cond:
    """`cond` of a batch of `rows` with the stage inputs (B, c + L, h, w) appended to its
    concatenated channels, repeated when the batch is several copies of the B samples (as
    classifier-free guidance's conditional and null halves)."""
    cond = cond or Cond()
    inputs = inputs.repeat(rows // len(inputs), 1, 1, 1)
    concat = inputs if cond.concat is None else torch.cat([cond.concat, inputs.to(cond.concat)], 1)
    return dataclasses.replace(cond, concat=concat)


def training_batch(z0: torch.Tensor, noise: torch.Tensor, cond: Cond, stage: torch.Tensor,
                   mix_noise: torch.Tensor, num_levels: int, noise_mix: float
                   ) -> tuple[torch.Tensor, torch.Tensor, Cond]:
    """A training batch's (z0 (B, c, h, w), noise N(0, 1) of that shape, cond) → the stage batch
    (level stage[b] of z0, its block-structured noise, cond with the stage inputs), for stages
    (B,) and standard normal `mix_noise` (B, c, h, w)."""
    target = stage_latents(z0, stage, num_levels)
    noise = stage_noise(noise[:, :target.shape[1]], stage, num_levels)
    inputs = stage_inputs(z0, stage, num_levels, noise_mix, pyramid_noise(mix_noise, num_levels))
    return target, noise, with_stage_inputs(cond, inputs, len(z0))


class StageDenoiser(DenoiserWrapper):
    """The denoiser of the current stage (set by `enter`): D_s(x) = P_s D(P_s x; cond ⊕ stage
    inputs), P_s the projection onto level s's block-constant latents. It is the innermost denoiser,
    so guidance and every other wrapper see one stage's latent."""

    def __init__(self, denoiser, num_levels: int):
        self.denoiser, self.num_levels = denoiser, num_levels
        self.inputs, self.block = None, 1

    def enter(self, inputs: torch.Tensor, block: int) -> None:
        """Denoise the stage with inputs (B, c + L, h, w) and block size k_s from now on."""
        self.inputs, self.block = inputs, block

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float,
                 cond: Cond | None = None) -> torch.Tensor:
        denoised = self.denoiser(blocks(x, self.block), sigma,
                                 with_stage_inputs(cond, self.inputs, len(x)))
        return blocks(denoised, self.block)


def sample_stages(stages: StageDenoiser, run: Callable[[torch.Tensor, int], torch.Tensor],
                  shape: tuple[int, int, int], generators: list[torch.Generator],
                  noise_mix: float, device: torch.device) -> torch.Tensor:
    """Coarse-to-fine sampling: z (B, c, h, w) of every level. `run(noise, s)` samples stage s from
    standard normal noise (B, c/L, h, w) with the denoiser chain whose base is `stages` and returns
    its latent; each stage draws its noise and the noise mixed into its condition from the
    per-sample generators, so sample i depends only on its own generator."""
    c, h, w = shape
    L = stages.num_levels
    z = torch.zeros(len(generators), c, h, w, device=device)
    for s, k in enumerate(block_sizes(L)):
        noise = blocks(randn_like(torch.empty(len(z), c // L, h, w, device=device), generators),
                       k, scale=True)
        mix = pyramid_noise(randn_like(z, generators), L)
        stage = torch.full((len(z),), s, dtype=torch.long, device=device)
        stages.enter(stage_inputs(z, stage, L, noise_mix, mix), k)
        z[:, level_channels(c, L, s)] = blocks(run(noise, s), k)
    return z


def refuse_stages(model, path, what: str) -> None:
    """A one-line error when `model` (a `LatentDiffusion` loaded from `path`) is coarse-to-fine:
    `what` (a teacher, a truncated chain) needs a network that denoises the whole latent."""
    if model.coarse_to_fine is not None:
        raise UserError(f"{path} samples coarse to fine (Frido: one pyramid level per stage); "
                        f"{what} needs a model that denoises the whole latent")
