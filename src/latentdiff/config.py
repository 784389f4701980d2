"""Typed configuration: one frozen dataclass per component; `config_files.py` is the only place
where YAML becomes these objects (re-exported here).

A YAML file maps onto a dataclass field by field; unknown keys, wrong types and missing values raise
`UserError`. Overrides use OmegaConf's dotted form (`train.max_steps=100`). Checkpoints embed
`to_dict(config)`, so a model is rebuilt from its file alone (`from_dict`).
"""

from dataclasses import dataclass, field

from latentdiff.config_backbones import (  # noqa: F401 (the denoiser networks)
    BACKBONES, DIT_SIZES, DiTConfig, NetworkConfig, UNetConfig, UViTConfig)
from latentdiff.config_diffusion import (  # noqa: F401 (the diffusion process and its training loss)
    PREDICTIONS, SCHEDULE_KINDS, SIGMA_SAMPLERS, WEIGHTINGS, CoarseToFineConfig, DiffusionConfig,
    MaskReplaceConfig, NoiseScheduleConfig, ObjectiveConfig, PostHocEMAConfig, StudentConfig)
from latentdiff.config_files import check as _check
from latentdiff.config_distill import (DistillConfig, LoRAConfig,  # noqa: F401 (students)
                                      TeacherConfig)
from latentdiff.config_files import (  # noqa: F401 (the config API: classes here, file handling there)
    BUNDLED_CONFIGS, from_dict, load_config, resolve_config_path, to_dict, to_yaml)
from latentdiff.config_train import (DATASETS, DataConfig, EncodeLatentsConfig,  # noqa: F401
                                     TrainConfig)


@dataclass(frozen=True)
class AutoencoderConfig:
    """First-stage encoder/decoder (paper Sec. 3.1), the original `ddconfig` with descriptive names,
    and its regulariser.

    The downsampling factor is f = 2^(len(channel_mult) − 1); `attn_resolutions` lists pixel
    resolutions (as the original) at which the encoder/decoder levels get self-attention, relative
    to `resolution`. regularizer: "kl" (diagonal Gaussian posterior), "vq" (a codebook of
    `codebook_size` vectors of `latent_channels` dimensions, applied inside the decoder) or "none":
    pixel space (identity, f = 1; built by `latentdiff train` for `autoencoder: pixels`, never
    trained). `residual_shortcuts` adds DC-AE's parameter-free shortcuts (Chen et al. 2024) around
    every down/upsampling and the latent projections: same weights and keys, an easier optimisation;
    off to match published checkpoints. `norm_groups`: the original's 32 groups leave a 32-channel
    model one channel per group, an instance norm that erases each channel's mean and contrast (the
    decoder's `norm_out` then cannot carry brightness); narrow models train far better with ≥ 4
    channels per group.
    """

    in_channels: int = 3
    base_channels: int = 128  # original: ch
    channel_mult: tuple[int, ...] = (1, 2, 4)  # original: ch_mult
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = ()
    latent_channels: int = 4  # original: z_channels = embed_dim
    resolution: int = 256  # training resolution; only used to place `attn_resolutions`
    dropout: float = 0.0
    regularizer: str = "kl"
    codebook_size: int = 8192  # VQ only (original: n_embed)
    # DC-AE parameter-free shortcuts; the original checkpoints have none
    residual_shortcuts: bool = False
    norm_groups: int = 32  # GroupNorm groups (original: 32); fewer for narrow models (docstring)
    # self-attention in the mid blocks (false: the original's attn_type none, VQ-f4-noattn)
    mid_attention: bool = True
    # Frido's feature pyramid: latent_channels split into this many levels, the coarsest first,
    # each at half the previous one's resolution (`autoencoder/pyramid.py`); 1: one level
    pyramid_levels: int = 1

    @property
    def downsampling_factor(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)

    def __post_init__(self):
        _check(self.norm_groups >= 1
               and all(self.base_channels * m % self.norm_groups == 0 for m in self.channel_mult),
               f"model.base_channels={self.base_channels} × channel_mult must be divisible by "
               f"model.norm_groups={self.norm_groups}")
        _check(self.regularizer in ("kl", "vq", "none"),
               f"model.regularizer={self.regularizer!r} is unknown; use kl, vq or none (pixel "
               "space, f = 1)")
        _check(self.regularizer != "none"
               or (len(self.channel_mult) == 1 and self.latent_channels == self.in_channels),
               "model.regularizer=none is pixel space: it needs channel_mult=[1] and "
               "latent_channels=in_channels")
        _check(2 <= self.codebook_size <= 65536,
               f"model.codebook_size={self.codebook_size} is out of range; use 2 … 65536 (the "
               "paper: 8192 or 16384)")
        _check(self.pyramid_levels >= 1 and self.latent_channels % self.pyramid_levels == 0
               and (self.pyramid_levels == 1 or self.regularizer != "none"),
               f"model.pyramid_levels={self.pyramid_levels} must be ≥ 1, divide "
               f"model.latent_channels={self.latent_channels}, and be 1 in pixel space")


@dataclass(frozen=True)
class AutoencoderLossConfig:
    """L_AE = L_rec + L_reg + λ·L_adv (paper Sec. 3.1); every pixel term is a per-pixel mean.

    L_rec = l1_weight·|x − x̃|₁ + perceptual_weight·P(x, x̃) with P one of "lpips" (VGG16 LPIPS from
      user-supplied weight files `lpips_weights`, plus `vgg16_weights` when that file holds only the
      linear layers), "ssim" (1 − SSIM), "ffl" (focal frequency loss), "none".
    L_reg = kl_weight·KL/(C·H·W) (the original sums both KL and L1 over pixels; the ratio is kept),
      or for VQ codebook_weight·(‖sg[E(x)] − e‖² + commitment_beta·‖E(x) − sg[e]‖²).
    L_adv: a PatchGAN (`disc_layers` strided layers, `disc_channels` wide) with hinge loss, switched
      on at step `disc_start`; the generator term is weighted by
      disc_weight·‖∇L_rec‖/(‖∇L_adv‖ + 1e-4) at the decoder's last layer. `r1_weight` > 0 adds the
      R1 penalty γ/2·E‖∇_x D(x)‖² on real images; `feature_matching_weight` adds L1 between the
      discriminator's features of x and x̃ (an offline perceptual term once D is on).
    `restart_unused_after` (VQ): codes unused for that many steps are re-initialised from encoder
    outputs (0: off).
    """

    l1_weight: float = 1.0
    perceptual: str = "ssim"
    perceptual_weight: float = 1.0
    lpips_weights: str | None = None
    vgg16_weights: str | None = None
    kl_weight: float = 1e-6
    codebook_weight: float = 1.0
    commitment_beta: float = 0.25
    restart_unused_after: int = 100
    disc_start: int = 50001
    disc_weight: float = 0.5
    disc_layers: int = 3
    disc_channels: int = 64
    disc_lr: float | None = None  # None: train.lr
    r1_weight: float = 0.0
    feature_matching_weight: float = 0.0

    def __post_init__(self):
        _check(self.perceptual in ("lpips", "ssim", "ffl", "none"),
               f"loss.perceptual={self.perceptual!r} is unknown; use lpips, ssim, ffl or none")
        _check(self.perceptual != "lpips" or self.lpips_weights,
               "loss.perceptual=lpips needs loss.lpips_weights=PATH (LPIPS weights cannot be "
               "downloaded here); or use loss.perceptual=ssim")
        _check(self.disc_start >= 0 and self.disc_layers >= 1,
               "loss.disc_start must be ≥ 0, loss.disc_layers ≥ 1")


@dataclass(frozen=True)
class TextEncoderConfig:
    """τ_θ: token + position embedding, `depth` × [LN → MHSA, LN → MLP (GELU, `mlp_ratio`·width)],
    final LN.

    The output (B, max_length, width) is the cross-attention context, so unet.context_dim = width.
    `pretrained`: a local Hugging Face text-model folder (e.g. a MiniLM/BERT or CLIP text encoder)
    to use frozen instead of training τ_θ; then width = its hidden size, and vocab_size, depth and
    num_heads are unused.
    """

    vocab_size: int = 2048  # BPE vocabulary learned on the captions (upper bound)
    max_length: int = 24  # tokens per prompt, [BOS] and [EOS] included (the context length M)
    width: int = 256
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: int = 4
    # channels per attention head; None: width / num_heads (x-transformers: 64 always)
    head_dim: int | None = None
    pretrained: str | None = None
    # attend to every context position, padding included (SD, BERTEmbedder)
    attend_to_padding: bool = False

    def __post_init__(self):
        _check(self.vocab_size >= 8 and self.max_length >= 3 and self.depth >= 0,
               "text: vocab_size must be ≥ 8, max_length ≥ 3 (room for [BOS] x [EOS]), depth ≥ 0")
        _check(self.head_dim is not None or self.width % self.num_heads == 0,
               f"text.width={self.width} must be divisible by text.num_heads={self.num_heads} (or "
               "set text.head_dim)")


@dataclass(frozen=True)
class AutoencoderTrainConfig:
    """`latentdiff train-autoencoder CONFIG`: the first stage on its own."""

    model: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    loss: AutoencoderLossConfig = field(default_factory=AutoencoderLossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass(frozen=True)
class PreviewConfig:
    """How the training loop draws its periodic sample grids (EMA weights)."""

    sampler: str = "ddim"
    steps: int = 50
    # columns per class row (class-conditional) or per condition row, or images / 8 rows
    per_class: int = 8
    # classifier-free guidance of conditioned previews (needs conditioning.drop_prob > 0)
    guidance_scale: float = 1.0

    def __post_init__(self):
        _check(self.steps >= 1 and self.per_class >= 1,
               "preview.steps and preview.per_class must be ≥ 1")
        _check(self.guidance_scale >= 0, "preview.guidance_scale must be ≥ 0")


CONDITIONING_KINDS = ("none", "text", "layout", "class", "semantic", "superres", "inpaint", "retrieval")


@dataclass(frozen=True)
class RetrievalConfig:
    """conditioning.kind=retrieval (Re-Imagen): the prompt's `neighbours` nearest (image, caption)
    pairs of the training set (`retrieval.py`) are also seen by cross-attention; `drop_prob`: the
    probability of training without them (independent of the text's drop_prob), which guidance
    against the references needs."""

    neighbours: int = 2
    drop_prob: float = 0.1

    def __post_init__(self):
        _check(self.neighbours >= 1, "conditioning.retrieval.neighbours must be ≥ 1")
        _check(0.0 <= self.drop_prob < 1.0, "conditioning.retrieval.drop_prob must be in [0, 1)")


@dataclass(frozen=True)
class ConditioningConfig:
    """What else than z_t and t the denoiser sees (paper Sec. 3.3); class labels come from
    unet.num_classes.

    kind: "none"; "text" (captions → BPE tokens → τ_θ → cross-attention); "layout"
    (boxes → (l, b, c) tokens → τ_θ → cross-attention); "class" (the label as one cross-attention
    token of `text.width` channels, the original ClassEmbedder; the other way is unet.num_classes);
    "semantic" (one-hot maps concatenated); "superres" (the image degraded by `sr_factor`, "bicubic"
    or "realistic", concatenated at the latent size); "inpaint" (E(masked image) and the mask
    concatenated); "retrieval" (text, plus the latents and captions of the prompt's nearest training
    neighbours as more cross-attention tokens: Re-Imagen, `retrieval`). drop_prob: probability of
    training on the null condition (empty prompt/layout; for classes the extra class
    num_classes − 1), which classifier-free guidance needs.
    """

    kind: str = "none"
    drop_prob: float = 0.0
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    layout_bins: int = 16
    max_boxes: int = 4
    sr_factor: int = 4
    sr_degradation: str = "bicubic"
    # inpaint: "max" (a latent cell touching a hole is one) or "nearest" (the original)
    mask_downsampling: str = "max"
    # text models that also see the mask and E(masked image) by concatenation, in Stable Diffusion
    # inpainting's layout: [mask resized (nearest) to the latent size, E(x ⊙ (1 − m))] (the
    # original's conditioning_key hybrid)
    masked_image: bool = False
    # semantic maps mapped by a learned 1×1 projection (no bias) to this many channels before
    # concatenation (the original SpatialRescaler's `channel_mapper`; 0: the one-hot map itself).
    # Loaded models only: not trained here
    semantic_embedding: int = 0
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)

    def __post_init__(self):
        _check(not self.masked_image or self.kind == "text",
               "conditioning.masked_image needs conditioning.kind=text")
        _check(self.kind in CONDITIONING_KINDS,
               f"conditioning.kind={self.kind!r} is unknown; use one of "
               f"{', '.join(CONDITIONING_KINDS)}")
        _check(0.0 <= self.drop_prob < 1.0, "conditioning.drop_prob must be in [0, 1)")
        _check(self.mask_downsampling in ("max", "nearest"),
               f"conditioning.mask_downsampling={self.mask_downsampling!r} is unknown; use "
               "max or nearest")
        _check(self.sr_degradation in ("bicubic", "realistic"),
               f"conditioning.sr_degradation={self.sr_degradation!r} is unknown; use bicubic "
               "or realistic")
        _check(self.layout_bins >= 2 and self.max_boxes >= 1 and self.sr_factor >= 2,
               "conditioning: layout_bins must be ≥ 2, max_boxes ≥ 1, sr_factor ≥ 2")


@dataclass(frozen=True)
class LatentDiffusionTrainConfig:
    """`latentdiff train CONFIG`: the diffusion stage on the latents of a trained autoencoder
    checkpoint."""

    # path to a checkpoint written by `latentdiff train-autoencoder`, or "pixels": diffusion in
    # pixel space (LDM-1)
    autoencoder: str = "???"
    # the denoiser network: "unet" (the paper's), "uvit" or "dit", configured by the section of
    # that name (docs/backbones.md)
    backbone: str = "unet"
    unet: UNetConfig = field(default_factory=UNetConfig)
    uvit: UViTConfig = field(default_factory=UViTConfig)
    dit: DiTConfig = field(default_factory=DiTConfig)
    # eDiff-I's expert denoisers (Balaji et al. 2022): σ boundaries b_1 < … < b_{K−1} split the noise
    # levels into K intervals, one network each, every one trained only on the σ of its interval;
    # with init_from, each starts as a copy of that trained model (branching)
    experts: tuple[float, ...] = ()
    # a `latentdiff train` checkpoint whose EMA weights (network and τ_θ) start this run: fine-tuning,
    # or branching experts from a base; its network config must equal this run's
    init_from: str | None = None
    # spectrum-aware distillation from a trained teacher (Spectral Diffusion), on top of the data loss
    distillation: TeacherConfig = field(default_factory=TeacherConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    # Frido's coarse-to-fine stages over the autoencoder's feature pyramid
    coarse_to_fine: CoarseToFineConfig = field(default_factory=CoarseToFineConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    ema_decay: float = 0.9999
    posthoc_ema: PostHocEMAConfig = field(default_factory=PostHocEMAConfig)
    scale_factor: float | None = None  # None: s = 1/std(z) measured on the training latents
    # measure a shift and scale per latent channel instead of one s
    per_channel_normalization: bool = False
    conditioning: ConditioningConfig = field(default_factory=ConditioningConfig)
    preview: PreviewConfig = field(default_factory=PreviewConfig)

    def __post_init__(self):
        _check(0 <= self.ema_decay <= 1, f"ema_decay={self.ema_decay} must be in [0, 1]")
        _check(self.scale_factor is None or self.scale_factor > 0,
               "scale_factor must be > 0 (or null: measured)")
        _check(self.backbone in BACKBONES,
               f"backbone={self.backbone!r} is unknown; use {', '.join(BACKBONES)}")
        _check(self.conditioning.kind != "retrieval" or not self.data.streamed,
               "conditioning.kind=retrieval keeps the training set as its database, in memory; "
               "use a dataset that is not streamed")
        _check(all(b > 0 for b in self.experts)
               and all(a < b for a, b in zip(self.experts, self.experts[1:])),
               f"experts={list(self.experts)} must be increasing σ boundaries > 0")
        _check(not self.experts or self.train.devices * self.train.num_nodes == 1,
               "experts train in one process for now (a batch may leave an expert unused, which "
               "DDP does not allow); set train.devices=1 and train.num_nodes=1")
        _check(not (self.coarse_to_fine.enabled and self.distillation.teacher),
               "distillation.teacher distils a whole latent; a coarse-to-fine run (one pyramid "
               "level per stage) cannot use it: set distillation.teacher=null")

    @property
    def network(self) -> NetworkConfig:
        """The config section of the chosen backbone."""
        return getattr(self, self.backbone)


def _classifier_trunk() -> UNetConfig:
    """ADM's classifier at the scale of this project's small latents: the encoder half of a
    64-channel UNet, attention at the two lower levels."""
    return UNetConfig(in_channels=4, out_channels=4, model_channels=64, channel_mult=(1, 2, 2),
                      num_res_blocks=1, attention_resolutions=(2, 4), head_channels=32)


@dataclass(frozen=True)
class ClassifierTrainConfig:
    """`latentdiff train-classifier MODEL CONFIG`: a noise-aware classifier p_φ(y | z_t, σ) for
    classifier guidance (Dhariwal & Nichol 2021, Sec. 4), trained on noised latents of the labelled
    data. `model`: the latent-diffusion checkpoint it will guide (its first stage, latent
    normalisation, schedule and parameterisation), or an autoencoder checkpoint (with `diffusion`
    and a normalisation measured on the data). `trunk`: the UNet whose encoder half (input blocks,
    middle block, timestep embedding) the classifier is, before attention pooling; its channels
    are set from the model. `entropy_weight` λ: the entropy-aware loss CE + λ·(log K − H(p_φ)) (Li
    et al. 2022, ECT) that keeps the classifier from becoming over-confident on noisy inputs; 0:
    plain cross-entropy. Noise levels are drawn as the diffusion model's training (uniform t)."""

    model: str = "???"
    trunk: UNetConfig = field(default_factory=_classifier_trunk)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir="runs/classifier"))
    entropy_weight: float = 0.0

    def __post_init__(self):
        _check(self.entropy_weight >= 0, f"entropy_weight={self.entropy_weight} must be ≥ 0")
        _check(self.trunk.context_dim is None and self.trunk.num_classes is None,
               "trunk: the classifier's UNet takes neither context nor class labels")
