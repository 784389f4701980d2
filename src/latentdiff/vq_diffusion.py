"""VQ-Diffusion's network and reverse process (Gu et al., CVPR 2022, Sec. 3.3–3.4) on the codes of
a VQ autoencoder: a transformer predicts p_θ(x̃_0 | x_t, y) for every token, and sampling runs the
reparameterised posterior from the process's prior q(x_T), with fewer steps than training (any
decreasing subset of 0 … T, the skipped transitions in closed form) and classifier-free guidance
on the x̃_0 distribution (Tang et al. 2022, "Improved VQ-Diffusion", Eq. 9).
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from latentdiff.autoencoder.vq import AutoencoderVQ
from latentdiff.conditioning.conditioner import Conditioner
from latentdiff.config_backbones import DiTConfig
from latentdiff.discrete_noise import Generators, MaskReplaceSchedule, draw
from latentdiff.dit import DiT


class CodeTransformer(nn.Module):
    """codes (B, h, w) in 0 … K ([MASK] = K), t (B,) → logits (B, K, h, w) of p_θ(x̃_0 | x_t, y).

    Each code (and [MASK]) has a learned embedding of `dit.in_channels` values; the token grid goes
    through a DiT with 1×1 patches (adaLN-Zero from t and an optional class, cross-attention to a
    text context), whose `out_channels` are the K code logits. The DiT's positions are fixed 2-D
    sin-cos, so the grid size is free."""

    def __init__(self, num_codes: int, dit: DiTConfig):
        super().__init__()
        if dit.patch_size != 1 or dit.out_channels != num_codes or dit.learn_sigma:
            raise ValueError("the code transformer's DiT needs patch_size 1, out_channels = the number "
                             "of codes and no learned σ")
        self.num_codes = num_codes
        self.code_embedding = nn.Embedding(num_codes + 1, dit.in_channels)
        nn.init.normal_(self.code_embedding.weight, std=0.02)
        self.dit = DiT(dit)

    @property
    def config(self) -> DiTConfig:
        return self.dit.config

    def forward(self, codes: torch.Tensor, t: torch.Tensor, **cond) -> torch.Tensor:
        x = self.code_embedding(codes).permute(0, 3, 1, 2)  # (B, h, w, D) → (B, D, h, w)
        return self.dit(x, t.to(x.dtype), **cond)


@dataclass
class VQDiffusion:
    """Everything needed to sample: the code transformer (with τ_θ in `conditioner` for token
    conditioning), the VQ autoencoder whose codes it models, the process; images are
    (B, C, image_size, image_size) in [-1, 1]."""

    transformer: CodeTransformer
    autoencoder: AutoencoderVQ
    schedule: MaskReplaceSchedule
    image_size: int
    class_names: tuple[str, ...] = ()
    conditioner: Conditioner | None = None
    # condition dropout during training: classifier-free guidance is possible
    trained_with_null: bool = False

    @property
    def code_grid(self) -> tuple[int, int]:
        side = self.image_size // self.autoencoder.config.downsampling_factor
        return side, side

    @property
    def num_classes(self) -> int | None:
        """Class count (the null class included) of class-conditional models: adaLN labels or a
        class token."""
        if self.conditioner is not None and self.conditioner.num_classes:
            return self.conditioner.num_classes
        return self.transformer.config.num_classes

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (B, h, w) → images (B, C, H, W) in [-1, 1]: D(e_codes)."""
        return self.autoencoder.decode_codes(self.autoencoder.quantize.lookup(codes)).clamp(-1, 1)


# p_θ(x̃_0 | x_t) as log-probabilities: (codes (B, N), t (B,)) → (B, K, N)
CodePredictor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def guided_log_probs(log_cond: torch.Tensor, log_uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """log p̂(x̃_0) ∝ log p(x̃_0 | x_t, ∅) + s·(log p(x̃_0 | x_t, y) − log p(x̃_0 | x_t, ∅)),
    renormalised over the codes (dim 1); s = 1 is the conditional model."""
    return torch.log_softmax(log_uncond + scale * (log_cond - log_uncond), dim=1)


def prior_sample(schedule: MaskReplaceSchedule, shape: tuple[int, int],
                 generator: Generators = None) -> torch.Tensor:
    """x_T ~ q(x_T) (`MaskReplaceSchedule.prior_probs`): (B, N) codes or [MASK]."""
    probs = schedule.prior_probs()[None, :, None].expand(shape[0], -1, shape[1])
    return draw(probs, generator)


def sample_codes(predict: CodePredictor, schedule: MaskReplaceSchedule, x_T: torch.Tensor,
                 steps: int, generator: Generators = None) -> torch.Tensor:
    """The reverse process on `steps` evenly spaced times T = t_n > … > t_1 > 0: each step draws
    x_s ~ p_θ(x_s | x_t) = Σ q(x_s | x_t, x̃_0)·p_θ(x̃_0 | x_t), and the last takes x_0 ~ p_θ(x̃_0 | x_{t_1})
    (the reparameterisation's s = 0). x_T: (B, N) → x_0 (B, N), codes only. `generator`: one, or
    one per sample (`draw`)."""
    if not 1 <= steps <= schedule.T:
        raise ValueError(f"steps must be in 1 … {schedule.T}, got {steps}")
    times = torch.linspace(schedule.T, 0, steps + 1).round().long().tolist()
    x = x_T
    for t, s in zip(times[:-1], times[1:]):
        batch_t = torch.full((len(x),), t, dtype=torch.long, device=x.device)
        x = draw(schedule.posterior(predict(x, batch_t).exp(), x, s, t), generator)  # (B, K+1, N)
    return x
