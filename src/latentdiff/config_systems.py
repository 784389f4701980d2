"""Configs of the follow-up systems built on the same first stage, conditioning and training engine
as the latent diffusion model (docs/systems.md). One frozen dataclass per command."""

from dataclasses import dataclass, field

from latentdiff.config import (ConditioningConfig, DataConfig, DiTConfig, MaskReplaceConfig,
                               TrainConfig)
from latentdiff.config_files import check as _check

# the conditioning kinds a token model takes (no spatial input to concatenate to its codes)
TOKEN_KINDS = ("none", "text", "layout", "class")


def _code_transformer() -> DiTConfig:
    """A small DiT over an 8×8 grid of codes: 1×1 patches, 256 codes."""
    return DiTConfig(in_channels=64, out_channels=256, patch_size=1, hidden_size=128, depth=6,
                     num_heads=4)


@dataclass(frozen=True)
class VQDiffusionTrainConfig:
    """`latentdiff train-vq-diffusion CONFIG`: VQ-Diffusion (Gu et al., CVPR 2022) on the codes of a
    trained VQ autoencoder (`autoencoder`, regularizer vq): the mask-and-replace process
    (`mask_replace`) and a transformer predicting x̃_0's codes. `transformer`: a DiT with 1×1
    patches over the code grid; its `in_channels` is the width of the learned code embedding,
    `out_channels` must equal the autoencoder's codebook size, `num_classes` the data's classes
    (+ 1 null class with condition dropout) for labels given by adaLN, `context_dim` the text
    encoder's width for conditioning.kind text, layout or class (cross-attention).
    `aux_weight` λ: the weight of the auxiliary x̃_0 cross-entropy next to the variational bound
    (the paper's 5e-4). `importance_sampling`: t drawn ∝ √E[L_t²] from the loss history, the loss
    reweighted to stay unbiased, and `adaptive_aux_weight`: λ·(2 − t/T) (both from the authors'
    training code; `discrete_objective.py`). Condition dropout (`conditioning.drop_prob`) makes
    classifier-free guidance possible."""

    autoencoder: str = "???"
    transformer: DiTConfig = field(default_factory=_code_transformer)
    mask_replace: MaskReplaceConfig = field(default_factory=MaskReplaceConfig)
    aux_weight: float = 5e-4
    importance_sampling: bool = False
    adaptive_aux_weight: bool = False
    conditioning: ConditioningConfig = field(default_factory=ConditioningConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir="runs/vq-diffusion"))
    ema_decay: float = 0.999
    # the preview grid's reverse steps and guidance scale
    preview_steps: int = 50
    preview_guidance: float = 1.0

    def __post_init__(self):
        _check(self.aux_weight >= 0, f"aux_weight={self.aux_weight} must be ≥ 0")
        _check(0 <= self.ema_decay <= 1, f"ema_decay={self.ema_decay} must be in [0, 1]")
        _check(self.transformer.patch_size == 1 and not self.transformer.learn_sigma,
               "transformer: VQ-Diffusion's transformer takes one code per token; set "
               "transformer.patch_size=1 and transformer.learn_sigma=false")
        _check(self.conditioning.kind in TOKEN_KINDS,
               f"conditioning.kind={self.conditioning.kind} gives a spatial input, which a code "
               f"transformer cannot take; use one of {', '.join(TOKEN_KINDS)}")
        _check(1 <= self.preview_steps <= self.mask_replace.num_timesteps,
               f"preview_steps must be in 1 … mask_replace.num_timesteps "
               f"({self.mask_replace.num_timesteps})")
        _check(self.preview_guidance >= 0, "preview_guidance must be ≥ 0")


@dataclass(frozen=True)
class PriorNetworkConfig:
    """A truncated-diffusion prior network (`truncation.py`): width and depth."""

    channels: int = 64
    blocks: int = 4

    def __post_init__(self):
        _check(self.channels >= 1 and self.blocks >= 1, "prior networks need channels ≥ 1 and "
               "blocks ≥ 1")


PRIOR_KINDS = ("gan", "gaussian")


@dataclass(frozen=True)
class TruncatedDiffusionTrainConfig:
    """`latentdiff train-tdpm CONFIG`: a truncated diffusion model (TDPM; Zheng et al., ICLR 2023)
    from a trained unconditional latent diffusion model (`model`): its chain truncated at timestep
    `t_trunc` (0-based; the paper's T_trunc, e.g. 99 of 1000) and a prior of x at σ_{t_trunc}:
    `prior` gan (TDPM's implicit generator `generator`, trained against `discriminator` with the
    non-saturating loss and an R1 penalty of weight `r1_gamma`/2 on real samples, the generator's EMA
    kept for sampling) or gaussian (the moment-matched Gaussian of the training latents; no
    training steps). The denoiser is the model's own (trained on the whole chain, which contains
    the truncated one). data: null = the model's training data (its checkpoint's config). The
    checkpoint is the model's with the prior added: `sample` and `eval` start every chain there."""

    model: str = "???"
    t_trunc: int = 99
    prior: str = "gan"
    generator: PriorNetworkConfig = field(default_factory=PriorNetworkConfig)
    discriminator: PriorNetworkConfig = field(default_factory=PriorNetworkConfig)
    r1_gamma: float = 0.05
    disc_lr: float | None = None
    ema_decay: float = 0.999
    data: DataConfig | None = None
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        out_dir="runs/tdpm", max_steps=3000, batch_size=64, lr=2e-4, adam_betas=(0.0, 0.99),
        grad_clip=0.0, sample_every=1000, checkpoint_every=1000))

    def __post_init__(self):
        _check(self.prior in PRIOR_KINDS,
               f"prior={self.prior!r} is unknown; use one of {', '.join(PRIOR_KINDS)}")
        _check(self.t_trunc >= 0, f"t_trunc={self.t_trunc} must be ≥ 0")
        _check(self.r1_gamma >= 0, f"r1_gamma={self.r1_gamma} must be ≥ 0")
        _check(self.disc_lr is None or self.disc_lr > 0, "disc_lr must be > 0 (null: train.lr)")
        _check(0 <= self.ema_decay <= 1, f"ema_decay={self.ema_decay} must be in [0, 1]")


@dataclass(frozen=True)
class WaveletGeneratorConfig:
    """WaveDiff's generator (`wavediff.WaveletGenerator`): `channels` × `channel_mult` widths per
    level, `blocks` AdaGN residual blocks per level, z of `z_dim` through `mapping_layers` of the
    mapping MLP to the `emb_dim` embedding (added to the timestep's). `wavelet` false: DDGAN's plain
    generator on the latents themselves (the ablation)."""

    channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2)
    blocks: int = 1
    z_dim: int = 64
    mapping_layers: int = 3
    emb_dim: int = 128
    wavelet: bool = True

    @property
    def latent_multiple(self) -> int:
        """Latent sides must be multiples of this: the levels' downsamplings, and with wavelets
        the input DWT and the bottleneck DWT."""
        levels = 2 ** (len(self.channel_mult) - 1)
        return levels * 4 if self.wavelet else levels

    def __post_init__(self):
        object.__setattr__(self, "channel_mult", tuple(self.channel_mult))
        _check(self.channels >= 1 and self.blocks >= 1 and len(self.channel_mult) >= 1
               and min(self.channel_mult) >= 1,
               "generator: channels, blocks and every channel_mult entry must be ≥ 1")
        _check(self.z_dim >= 1 and self.mapping_layers >= 1 and self.emb_dim >= 2,
               "generator: z_dim and mapping_layers must be ≥ 1 and emb_dim ≥ 2")


@dataclass(frozen=True)
class WaveletDiscriminatorConfig:
    """WaveDiff's discriminator (`wavediff.WaveletDiscriminator`): width, residual blocks (all but
    the last halve the size) and the timestep embedding's width."""

    channels: int = 64
    blocks: int = 2
    emb_dim: int = 128

    def __post_init__(self):
        _check(self.channels >= 1 and self.blocks >= 1 and self.emb_dim >= 2,
               "discriminator: channels and blocks must be ≥ 1 and emb_dim ≥ 2")


@dataclass(frozen=True)
class WaveDiffTrainConfig:
    """`latentdiff train-wavediff CONFIG`: a wavelet diffusion GAN (WaveDiff; Phung et al., CVPR
    2023) on the latents of a trained KL autoencoder (`autoencoder`), unconditional: the
    `num_timesteps`-step DDGAN chain (`gan_chain.py`, β from `beta_min` to `beta_max`), the
    generator trained with the non-saturating loss against `discriminator` plus `rec_weight`·‖x̃_0 −
    x_0‖₁ (WaveDiff's reconstruction term), the discriminator with an R1 penalty of weight
    `r1_gamma`/2 on real pairs and its own learning rate `disc_lr` (null: train.lr); the generator's
    EMA is what is sampled. Latents are normalised as the latent model's (global 1/std)."""

    autoencoder: str = "???"
    num_timesteps: int = 4
    beta_min: float = 0.1
    beta_max: float = 20.0
    generator: WaveletGeneratorConfig = field(default_factory=WaveletGeneratorConfig)
    discriminator: WaveletDiscriminatorConfig = field(default_factory=WaveletDiscriminatorConfig)
    rec_weight: float = 1.0
    r1_gamma: float = 0.02
    disc_lr: float | None = 1.25e-4
    ema_decay: float = 0.999
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        out_dir="runs/wavediff", max_steps=4000, batch_size=64, lr=1.6e-4, adam_betas=(0.5, 0.9),
        grad_clip=0.0, sample_every=1000, checkpoint_every=1000))

    def __post_init__(self):
        _check(1 <= self.num_timesteps <= 64, f"num_timesteps={self.num_timesteps} must be in "
               "1 … 64 (a DDGAN chain has few steps)")
        _check(0 <= self.beta_min < self.beta_max, "need 0 ≤ beta_min < beta_max")
        _check(self.rec_weight >= 0, f"rec_weight={self.rec_weight} must be ≥ 0")
        _check(self.r1_gamma >= 0, f"r1_gamma={self.r1_gamma} must be ≥ 0")
        _check(self.disc_lr is None or self.disc_lr > 0, "disc_lr must be > 0 (null: train.lr)")
        _check(0 <= self.ema_decay <= 1, f"ema_decay={self.ema_decay} must be in [0, 1]")
