"""Typed configuration of the denoiser network F_θ (re-exported by `config`): the paper's UNet
(Sec. 3.2) or a vision transformer on latent patches (U-ViT, DiT), chosen by the train config's
`backbone`. Every network config names its input/output channels and conditioning the same way
(in_channels, out_channels, num_classes, context_dim, guidance_embedding), so training, loading and
conditioning treat them alike; `latent_multiple` is what the latent's side must be divisible by.
"""

from dataclasses import dataclass

from latentdiff.config_files import check as _check


@dataclass(frozen=True)
class UNetConfig:
    """The time-conditional UNet ε_θ(z_t, t, y) (ADM-style, the original `UNetModel`).

    `attention_resolutions` are downsampling rates (1, 2, 4, ...) at which blocks get
    self-attention, as in the original configs. Heads: set exactly one of `num_heads`
    (fixed head count) or `head_channels` (channels per head); the other is -1. Conditioning
    (paper Sec. 3.3): `num_classes` adds a label embedding to the time embedding; `context_dim` (the
    width d of the context τ_θ(y) ∈ R^{M×d}) turns every attention block into a spatial transformer
    of `transformer_depth` blocks whose cross-attention reads that context (`linear_projection`: SD
    2.x's Linear proj_in/proj_out); `in_channels` counts the latent plus any concatenated inputs
    (semantic maps, low-res images, masks).
    """

    in_channels: int = 4
    out_channels: int = 4
    model_channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (2, 4)
    num_heads: int = -1
    head_channels: int = 32
    dropout: float = 0.0
    num_classes: int | None = None  # class-conditional via an embedding added to the time embedding
    use_scale_shift_norm: bool = False  # ADM's adaptive GroupNorm: h = GN(h)·(1 + scale) + shift
    conv_resample: bool = True
    # down/upsample with ResBlocks that resample inside (the original's option)
    resblock_updown: bool = False
    context_dim: int | None = None  # cross-attention context width d (original: context_dim)
    transformer_depth: int = 1
    linear_projection: bool = False  # original: use_linear_in_transformer
    # CoordConv (Liu et al. 2018): two input channels holding x and y in [−1, 1] across the sampled
    # latent, an absolute position signal for layout conditioning (not in the original LDM; off for
    # its checkpoints)
    coordinate_channels: bool = False
    # where each spatial-transformer token lies (2-D Fourier features with this many frequencies per
    # axis, through a learned projection added after proj_in): lets cross-attention queries bind
    # words and boxes to places (not in the original; with v-prediction the shapes models follow
    # boxes and relations, with ε-prediction hardly: docs/conditioning.md)
    position_frequencies: int = 0
    # the context's masked mean over its tokens, projected and added to the time embedding
    # (`context_emb`), a global
    # condition for every ResBlock as Imagen's and SDXL's pooled text embedding (not in the original
    # LDM)
    pooled_context: bool = False
    # the classifier-free guidance scale s as an input (a guided student, Meng et al. 2023; LCM's
    # w-embedding): sinusoidal features of 1000·s through a bias-free, zero-initialised projection
    # (`guidance_proj`) added to the timestep features, so that a student starts as its teacher
    guidance_embedding: bool = False
    # Spectral Diffusion's wavelet-gated resampling (Yang et al. 2023, Sec. 4.1): every Downsample /
    # Upsample goes through the Haar subbands, each weighted by channel gates from the features and
    # the timestep embedding (`nn/wavelets.py`; not in the original)
    wavelet_gates: bool = False

    def __post_init__(self):
        _check(self.context_dim is None or self.context_dim >= 1,
               "unet.context_dim must be ≥ 1 (or null)")
        _check(not (self.wavelet_gates and self.resblock_updown),
               "unet.wavelet_gates replaces the Downsample/Upsample layers, which "
               "unet.resblock_updown removes; choose one")
        _check(self.transformer_depth >= 1, "unet.transformer_depth must be ≥ 1")
        _check(self.position_frequencies >= 0, "unet.position_frequencies must be ≥ 0 (0: none)")
        _check(not self.pooled_context or self.context_dim is not None,
               "unet.pooled_context needs unet.context_dim")
        _check((self.num_heads == -1) != (self.head_channels == -1),
               "unet: set exactly one of num_heads / head_channels (the other to -1)")
        _check(all(self.model_channels * m % 32 == 0 for m in self.channel_mult),
               f"unet.model_channels={self.model_channels} × channel_mult must be divisible by 32 "
               "(GroupNorm(32))")


    @property
    def latent_multiple(self) -> int:
        """The latent side must be divisible by 2^(levels − 1)."""
        return 2 ** (len(self.channel_mult) - 1)


def _check_tokens(name: str, width: int, num_heads: int, patch_size: int, mlp_ratio: float,
                  context_dim: int | None) -> None:
    _check(width >= 1 and num_heads >= 1 and width % num_heads == 0,
           f"{name}: the width {width} must be divisible by num_heads={num_heads}")
    _check(patch_size >= 1 and mlp_ratio > 0, f"{name}.patch_size must be ≥ 1, mlp_ratio > 0")
    _check(context_dim is None or context_dim >= 1, f"{name}.context_dim must be ≥ 1 (or null)")


@dataclass(frozen=True)
class UViTConfig:
    """U-ViT (Bao et al. 2023, Sec. 3): all inputs are tokens — the time, the condition (a class
    token, or the text context's M tokens through a linear map) and the latent's p×p patches — through
    `depth` pre-norm transformer blocks: (depth − 1)/2 in, one middle, (depth − 1)/2 out, where out
    block i first maps [h, skip from in block depth−1−i] by a linear layer (`long_skip`; off: the
    ablation without skips). A linear head back to patches and a 3×3 conv (`final_conv`) give the
    output. Patch positions are fixed 2-D sin-cos embeddings (the original learns them for one size;
    fixed ones let a network run at any latent size), the time/condition tokens get learned ones.
    """

    in_channels: int = 4
    out_channels: int = 4
    patch_size: int = 2
    width: int = 256
    depth: int = 9
    num_heads: int = 4
    mlp_ratio: float = 4.0
    qkv_bias: bool = False
    long_skip: bool = True
    final_conv: bool = True
    mlp_time_embed: bool = False  # the time token through Linear-SiLU-Linear (U-ViT-H's choice)
    num_classes: int | None = None
    context_dim: int | None = None
    max_context: int = 77  # learned position embeddings for up to this many context tokens
    guidance_embedding: bool = False  # as UNetConfig's: zero-initialised, added to the time token

    def __post_init__(self):
        _check_tokens("uvit", self.width, self.num_heads, self.patch_size, self.mlp_ratio,
                      self.context_dim)
        _check(self.depth >= 1 and self.depth % 2 == 1,
               f"uvit.depth={self.depth} must be odd: (depth − 1)/2 in blocks, a middle one, "
               "(depth − 1)/2 out blocks")

    @property
    def latent_multiple(self) -> int:
        return self.patch_size


# (depth, hidden_size, num_heads) of Peebles & Xie's Table 1
DIT_SIZES = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}


@dataclass(frozen=True)
class DiTConfig:
    """DiT (Peebles & Xie 2023, Sec. 3.2): the latent cut into p×p patches (a stride-p conv), fixed
    2-D sin-cos positions, `depth` adaLN-Zero blocks — LN(h)·(1 + γ) + β before attention and MLP,
    each branch scaled by a gate α, with (β, γ, α) regressed from c = emb(t) + emb(y) by a
    zero-initialised linear layer, so every block starts as the identity — and a final adaLN +
    linear layer back to patches. Text models (context_dim) add a cross-attention branch to each
    block (zero-initialised output, as PixArt-α's). Sizes S/B/L/XL: `DiTConfig.of_size`.
    `learn_sigma`: the network also outputs the variance channels of the original checkpoints; they
    are discarded (the samplers here use the ε half only), so it is for loading, not training.
    `time_frequency_shift` 0 (the original) or 1 (diffusers' DiTTransformer2DModel: frequencies
    10000^(−i/(half − 1))); `mlp_norm_eps` the LN eps before the MLP (1e-6 original, 1e-5
    diffusers).
    """

    in_channels: int = 4
    out_channels: int = 4
    patch_size: int = 2
    hidden_size: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    num_classes: int | None = None
    context_dim: int | None = None
    learn_sigma: bool = False
    frequency_dim: int = 256
    time_frequency_shift: int = 0
    mlp_norm_eps: float = 1e-6
    guidance_embedding: bool = False  # as UNetConfig's: zero-initialised, added to the time features

    def __post_init__(self):
        _check_tokens("dit", self.hidden_size, self.num_heads, self.patch_size, self.mlp_ratio,
                      self.context_dim)
        _check(self.depth >= 1 and self.frequency_dim >= 2 and self.time_frequency_shift in (0, 1),
               "dit: depth must be ≥ 1, frequency_dim ≥ 2, time_frequency_shift 0 or 1")

    @classmethod
    def of_size(cls, size: str, **fields) -> "DiTConfig":
        """DiT-S, -B, -L or -XL (Table 1 of the paper) with the other fields given."""
        if size not in DIT_SIZES:
            raise ValueError(f"DiT size {size!r} is unknown; use {', '.join(DIT_SIZES)}")
        depth, hidden_size, num_heads = DIT_SIZES[size]
        return cls(depth=depth, hidden_size=hidden_size, num_heads=num_heads, **fields)

    @property
    def latent_multiple(self) -> int:
        return self.patch_size


NetworkConfig = UNetConfig | UViTConfig | DiTConfig
# the train config's `backbone` → the config section it reads
BACKBONES = {"unet": UNetConfig, "uvit": UViTConfig, "dit": DiTConfig}
