"""U-ViT (Bao et al. 2023, Sec. 3): a vision transformer that treats every input as a token — the
time, the condition and the latent's patches — with long skip connections between shallow and deep
blocks, as a denoiser network F_θ(x, c_noise, cond) interchangeable with the UNet.

Module names follow the original: `patch_embed.proj`, `time_embed`, `label_emb`, `context_embed`,
`in_blocks`, `mid_block`, `out_blocks` (each `norm1`, `attn`, `norm2`, `mlp`, and `skip_linear` in
the out blocks), `norm`, `decoder_pred`, `final_layer`.
"""

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from latentdiff.config import UViTConfig
from latentdiff.nn.layers import guidance_features, network_input, timestep_embedding, zero_module
from latentdiff.nn.vit import Attention, Mlp, PatchEmbed, unpatchify


class Block(nn.Module):
    """Pre-norm transformer block on tokens (B, N, D): h ← h + Attn(LN(h)), h ← h + MLP(LN(h)); a
    long-skip block first maps [h, skip] (B, N, 2D) to D channels by `skip_linear`."""

    def __init__(self, cfg: UViTConfig, skip: bool):
        super().__init__()
        d = cfg.width
        self.skip_linear = nn.Linear(2 * d, d) if skip else None
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = Attention(d, cfg.num_heads, cfg.qkv_bias)
        self.mlp = Mlp(d, int(d * cfg.mlp_ratio))

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None,
                skip: torch.Tensor | None = None) -> torch.Tensor:
        if self.skip_linear is not None:
            x = self.skip_linear(torch.cat([x, skip], dim=-1))
        x = x + self.attn(self.norm1(x), key_mask)
        return x + self.mlp(self.norm2(x))


class UViT(nn.Module):
    """x (B, in_channels, H, W), c_noise (B,) → (B, out_channels, H, W); H, W divisible by
    patch_size. Takes the UNet's keyword inputs (context, class_labels, concat, context_mask,
    guidance) with the same meaning. Token sequence: [time, class | context₁…M, patches]."""

    def __init__(self, cfg: UViTConfig):
        super().__init__()
        self.config, self.checkpointing = cfg, False
        d = cfg.width
        self.patch_embed = PatchEmbed(cfg.in_channels, d, cfg.patch_size)
        self.time_embed = (nn.Sequential(nn.Linear(d, 4 * d), nn.SiLU(), nn.Linear(4 * d, d))
                           if cfg.mlp_time_embed else nn.Identity())
        extras = 1
        if cfg.num_classes is not None:
            self.label_emb = nn.Embedding(cfg.num_classes, d)
            extras += 1
        if cfg.context_dim is not None:
            self.context_embed = nn.Linear(cfg.context_dim, d)
            extras += cfg.max_context
        if cfg.guidance_embedding:
            self.guidance_proj = zero_module(nn.Linear(d, d, bias=False))
        # learned positions of the time / condition tokens (the patches' are fixed sin-cos)
        self.extras_pos_embed = nn.Parameter(torch.zeros(1, extras, d))
        half = (cfg.depth - 1) // 2
        self.in_blocks = nn.ModuleList([Block(cfg, skip=False) for _ in range(half)])
        self.mid_block = Block(cfg, skip=False)
        self.out_blocks = nn.ModuleList([Block(cfg, skip=cfg.long_skip) for _ in range(half)])
        self.norm = nn.LayerNorm(d)
        self.decoder_pred = nn.Linear(d, cfg.patch_size ** 2 * cfg.out_channels)
        self.final_layer = (nn.Conv2d(cfg.out_channels, cfg.out_channels, 3, padding=1)
                            if cfg.final_conv else nn.Identity())
        self._initialize()

    def _initialize(self) -> None:
        """The original's: linear layers N(0, 0.02²) truncated at ±2σ with zero biases, LayerNorms
        at (1, 0), learned positions N(0, 0.02²); the guidance projection at zero."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.extras_pos_embed, std=0.02)
        if hasattr(self, "guidance_proj"):
            zero_module(self.guidance_proj)

    def gradient_checkpointing(self, enabled: bool = True) -> "UViT":
        """Recompute each block's activations in the backward pass instead of storing them."""
        self.checkpointing = enabled
        return self

    def _block(self, block: Block, *inputs) -> torch.Tensor:
        if self.checkpointing and torch.is_grad_enabled():
            return checkpoint(block, *inputs, use_reentrant=False)
        return block(*inputs)

    def _extras(self, timesteps: torch.Tensor, class_labels: torch.Tensor | None,
                context: torch.Tensor | None, guidance: torch.Tensor | None,
                dtype: torch.dtype) -> torch.Tensor:
        """The time token, then the class token or the context's M tokens: (B, 1 [+ 1 | M], D)."""
        cfg = self.config
        features = timestep_embedding(timesteps, cfg.width).to(dtype)
        if guidance is not None:
            features = features + guidance_features(self.guidance_proj, guidance, cfg.width,
                                                    len(features), dtype)
        tokens = [self.time_embed(features)[:, None]]
        if class_labels is not None:
            tokens.append(self.label_emb(class_labels)[:, None])
        if context is not None:
            if context.shape[1] > cfg.max_context:
                raise ValueError(f"{context.shape[1]} context tokens > uvit.max_context="
                                 f"{cfg.max_context}")
            tokens.append(self.context_embed(context))
        extras = torch.cat(tokens, dim=1)
        return extras + self.extras_pos_embed[:, :extras.shape[1]]

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor | None = None,
                class_labels: torch.Tensor | None = None, concat: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None,
                guidance: torch.Tensor | None = None) -> torch.Tensor:
        cfg = self.config
        x, context = network_input(cfg, x, context, class_labels, concat, guidance,
                                   self.patch_embed.proj.weight.dtype)
        patches, (h, w) = self.patch_embed(x)
        extras = self._extras(timesteps, class_labels, context, guidance, x.dtype)
        tokens = torch.cat([extras, patches], dim=1)
        key_mask = None
        if context_mask is not None:
            n = extras.shape[1] - context_mask.shape[1]  # time [+ class] tokens before the context
            keep = context_mask.new_ones(len(x), 1)
            key_mask = torch.cat([keep.expand(-1, n), context_mask, keep.expand(-1, h * w)], dim=1)
        skips = []
        for block in self.in_blocks:
            tokens = self._block(block, tokens, key_mask)
            skips.append(tokens)
        tokens = self._block(self.mid_block, tokens, key_mask)
        for block in self.out_blocks:
            tokens = self._block(block, tokens, key_mask, skips.pop() if cfg.long_skip else None)
        patches = self.decoder_pred(self.norm(tokens))[:, extras.shape[1]:]
        return self.final_layer(unpatchify(patches, h, w, cfg.patch_size))
