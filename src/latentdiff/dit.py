"""DiT, the diffusion transformer on latent patches (Peebles & Xie 2023, Sec. 3.2), as a denoiser
network F_θ(x, c_noise, cond) interchangeable with the UNet.

Module names mirror the original DiT checkpoints (`x_embedder.proj`, `t_embedder.mlp.{0,2}`,
`y_embedder.embedding_table`, `blocks.{i}.{attn,mlp,adaLN_modulation.1}`,
`final_layer.{linear,adaLN_modulation.1}`), so they load by name; diffusers'
`DiTTransformer2DModel` goes through a key map (`checkpoints/interop/dit.py`).
"""

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from latentdiff.config import DiTConfig
from latentdiff.nn.layers import guidance_features, network_input, timestep_embedding, zero_module
from latentdiff.nn.transformer import CrossAttention
from latentdiff.nn.vit import Attention, Mlp, PatchEmbed, modulate, unpatchify


class TimestepEmbedder(nn.Module):
    """(B, F) sinusoidal features of the noise level → (B, D) through Linear-SiLU-Linear (`mlp`)."""

    def __init__(self, frequency_dim: int, dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp(features)


class LabelEmbedder(nn.Module):
    """(B,) class indices → (B, D) (`embedding_table`; the null class of classifier-free guidance is
    one of the classes, as everywhere in latentdiff)."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes, dim)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.embedding_table(labels)


class DiTBlock(nn.Module):
    """h ← h + α₁·Attn(LN(h)·(1 + γ₁) + β₁) [+ CrossAttn(LN(h), context)] + …,
    h ← h + α₂·MLP(LN(h)·(1 + γ₂) + β₂), with (β₁, γ₁, α₁, β₂, γ₂, α₂) = W·SiLU(c) + b (adaLN-Zero:
    W, b start at zero, so the block starts as the identity). Tokens (B, N, D), c (B, D)."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        d = cfg.hidden_size
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(d, cfg.num_heads)
        if cfg.context_dim is not None:
            self.norm_cross = nn.LayerNorm(d)
            self.cross_attn = CrossAttention(d, cfg.context_dim, cfg.num_heads, d // cfg.num_heads)
            zero_module(self.cross_attn.to_out[0])
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=cfg.mlp_norm_eps)
        self.mlp = Mlp(d, int(d * cfg.mlp_ratio), approximate="tanh")
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), zero_module(nn.Linear(d, 6 * d)))

    def forward(self, x: torch.Tensor, c: torch.Tensor, context: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate1[:, None] * self.attn(modulate(self.norm1(x), shift1, scale1))
        if context is not None:
            x = x + self.cross_attn(self.norm_cross(x), context, context_mask)
        return x + gate2[:, None] * self.mlp(modulate(self.norm2(x), shift2, scale2))


class FinalLayer(nn.Module):
    """Tokens (B, N, D) → (B, N, p·p·C_out): LN(h)·(1 + γ) + β, (β, γ) from c, then a linear layer;
    both zero-initialised, so the network starts by predicting 0."""

    def __init__(self, dim: int, patch_values: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = zero_module(nn.Linear(dim, patch_values))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), zero_module(nn.Linear(dim, 2 * dim)))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class DiT(nn.Module):
    """x (B, in_channels, H, W), c_noise (B,) → (B, out_channels, H, W); H, W divisible by
    patch_size. Takes the UNet's keyword inputs (context, class_labels, concat, context_mask,
    guidance) with the same meaning."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.config, self.checkpointing = cfg, False
        d, out = cfg.hidden_size, cfg.out_channels * (2 if cfg.learn_sigma else 1)
        self.x_embedder = PatchEmbed(cfg.in_channels, d, cfg.patch_size)
        self.t_embedder = TimestepEmbedder(cfg.frequency_dim, d)
        if cfg.num_classes is not None:
            self.y_embedder = LabelEmbedder(cfg.num_classes, d)
        if cfg.guidance_embedding:
            self.guidance_proj = nn.Linear(cfg.frequency_dim, cfg.frequency_dim, bias=False)
        self.blocks = nn.ModuleList([DiTBlock(cfg) for _ in range(cfg.depth)])
        self.final_layer = FinalLayer(d, cfg.patch_size ** 2 * out)
        self._initialize()

    def _initialize(self) -> None:
        """The original's: Xavier-uniform linear layers and patch conv (as a linear map), zero
        biases, N(0, 0.02²) time MLP and label table; adaLN and the final layer at zero."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        weight = self.x_embedder.proj.weight
        nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        for linear in (self.t_embedder.mlp[0], self.t_embedder.mlp[2]):
            nn.init.normal_(linear.weight, std=0.02)
        if hasattr(self, "y_embedder"):
            nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        zeroed = [self.final_layer.linear, self.final_layer.adaLN_modulation[1],
                  *(b.adaLN_modulation[1] for b in self.blocks),
                  *(b.cross_attn.to_out[0] for b in self.blocks if hasattr(b, "cross_attn")),
                  *([self.guidance_proj] if hasattr(self, "guidance_proj") else [])]
        for module in zeroed:
            zero_module(module)

    def gradient_checkpointing(self, enabled: bool = True) -> "DiT":
        """Recompute each block's activations in the backward pass instead of storing them."""
        self.checkpointing = enabled
        return self

    def conditioning(self, timesteps: torch.Tensor, class_labels: torch.Tensor | None,
                     guidance: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        """c = MLP(freq(c_noise) [+ guidance features]) [+ emb(y)]: (B, D)."""
        cfg = self.config
        features = timestep_embedding(timesteps, cfg.frequency_dim,
                                      shift=cfg.time_frequency_shift).to(dtype)
        if guidance is not None:
            features = features + guidance_features(self.guidance_proj, guidance, cfg.frequency_dim,
                                                    len(features), dtype)
        c = self.t_embedder(features)
        return c if class_labels is None else c + self.y_embedder(class_labels)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor | None = None,
                class_labels: torch.Tensor | None = None, concat: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None,
                guidance: torch.Tensor | None = None) -> torch.Tensor:
        cfg = self.config
        x, context = network_input(cfg, x, context, class_labels, concat, guidance,
                                   self.x_embedder.proj.weight.dtype)
        tokens, (h, w) = self.x_embedder(x)
        c = self.conditioning(timesteps, class_labels, guidance, x.dtype)
        for block in self.blocks:
            if self.checkpointing and torch.is_grad_enabled():
                tokens = checkpoint(block, tokens, c, context, context_mask, use_reentrant=False)
            else:
                tokens = block(tokens, c, context, context_mask)
        out = unpatchify(self.final_layer(tokens, c), h, w, cfg.patch_size)
        return out[:, :cfg.out_channels]  # learn_sigma: the variance half is not used here
