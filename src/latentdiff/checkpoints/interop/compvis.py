"""Published CompVis latent-diffusion / Stable Diffusion single-file checkpoints → a latentdiff
`LatentDiffusion`.

The architecture comes from the original YAML config (OmegaConf layout `model.params.{unet_config,
first_stage_config, cond_stage_config}.params`), read as data: no `target` is imported or
instantiated. The weights come from the state dict by prefix, onto modules that carry the original
names:

    model.diffusion_model.*            → UNet
    model_ema.<UNet name without dots> → UNet, EMA shadows (LitEma removes every dot from the names)
    first_stage_model.*                → KL or VQ autoencoder (`loss.*` of stand-alone files ignored)
    cond_stage_model.*                 → the conditioner, when it has weights (BERTEmbedder: x_transformer.py)

The latent scale factor is the `scale_factor` buffer when the file has one (`scale_by_std` runs),
else the config's (1.0 when absent: VQ latents are not rescaled). CompVis "linear" β is linear in
√β: our `scaled_linear`.
"""

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from yaml import YAMLError

from latentdiff.autoencoder import LatentCodec, LatentStats, build_autoencoder
from latentdiff.checkpoints.interop.clip import DEFAULT_VERSION, frozen_clip_text
from latentdiff.checkpoints.interop.files import read_state_dict
from latentdiff.checkpoints.interop.x_transformer import (
    PREFIX, bert_tokenizer, x_transformer_config, x_transformer_weights)
from latentdiff.checkpoints.io import load_weights
from latentdiff.conditioning.classes import ClassTokenConditioner, ClassTokenizer
from latentdiff.conditioning.conditioner import Conditioner
from latentdiff.conditioning.inpainting import InpaintingConditioner
from latentdiff.conditioning.semantic import SemanticConditioner
from latentdiff.conditioning.superres import SuperResConditioner
from latentdiff.conditioning.text import TextConditioner
from latentdiff.config import (AutoencoderConfig, ConditioningConfig, NoiseScheduleConfig,
                               TextEncoderConfig, UNetConfig)
from latentdiff.errors import UserError
from latentdiff.ldm import LatentDiffusion
from latentdiff.noise import NoiseSchedule
from latentdiff.unet import UNetModel

UNET, EMA, FIRST_STAGE = "model.diffusion_model.", "model_ema.", "first_stage_model."
# CompVis → ours
BETA_SCHEDULES = {"linear": "scaled_linear", "sqrt_linear": "linear", "cosine": "cosine"}
# unet_config.params keys: read, or without effect at fp32 inference (memory/speed switches of the
# original code).
KNOWN_UNET_OPTIONS = {"in_channels", "out_channels", "model_channels",
                      "channel_mult", "num_res_blocks",
                      "attention_resolutions", "num_heads", "num_head_channels",
                      "dropout", "num_classes",
                      "use_scale_shift_norm", "conv_resample",
                      "use_spatial_transformer", "context_dim",
                      "transformer_depth", "use_linear_in_transformer", "legacy",
                      "image_size", "use_checkpoint",
                      "use_fp16", "num_heads_upsample", "use_new_attention_order",
                      "dims", "resblock_updown"}
# Options of architectures latentdiff does not build: an error when set.
UNSUPPORTED_UNET_OPTIONS = ("disable_self_attentions", "num_attention_blocks",
                            "disable_middle_self_attn", "n_embed", "adm_in_channels",
                            "spatial_transformer_attn_type")


@dataclass(frozen=True)
class OriginalConfig:
    """The parts of an original `model.params` that decide the architecture and the sampling
    maths."""

    unet: UNetConfig
    autoencoder: AutoencoderConfig
    schedule: NoiseScheduleConfig
    prediction: str
    scale_factor: float
    latent_size: int
    conditioning_key: str | None
    # the cond stage's target class name, or __is_unconditional__ / __is_first_stage__
    cond_stage: str
    cond_stage_params: dict
    # the original samples with the EMA weights only when this is set (its default: True)
    use_ema: bool = True


def read_yaml(path: str | Path) -> dict:
    """A YAML file as plain containers (interpolations resolved), with a one-line error when it is
    not one."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config {str(path)!r} does not exist; pass the YAML that came with "
                        "the checkpoint")
    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except (OmegaConfBaseException, YAMLError, ValueError) as e:
        raise UserError(f"{path} is not a readable YAML config "
                        f"({str(e).splitlines()[0]})") from None


def _params(section: dict | None, where: str) -> dict:
    if not isinstance(section, dict) or not isinstance(section.get("params", {}), dict):
        raise UserError(f"the config has no {where}; is it an original latent-diffusion / Stable "
                        "Diffusion config?")
    return section.get("params", {})


def _target_name(section: dict | str | None) -> str:
    if isinstance(section, str):
        return section
    return str((section or {}).get("target", "")).rsplit(".", 1)[-1]


def _cond_stage_params(section: dict | str | None) -> dict:
    return (section.get("params") or {}) if isinstance(section, dict) else {}


def unet_config(p: dict) -> UNetConfig:
    """`unet_config.params` → UNetConfig. Head arithmetic as `openaimodel.UNetModel`:
    num_head_channels, when set, wins over num_heads; with `legacy` the spatial transformer's head
    width is ch // heads, the same numbers."""
    unknown = sorted(set(p) - KNOWN_UNET_OPTIONS - set(UNSUPPORTED_UNET_OPTIONS))
    if unknown:
        raise UserError(f"unet_config has options latentdiff does not know: {', '.join(unknown)}")
    unsupported = [k for k in UNSUPPORTED_UNET_OPTIONS if p.get(k)]
    unsupported += ["dims"] if p.get("dims", 2) != 2 else []
    if (p.get("num_heads_upsample", -1) not in (-1, p.get("num_heads", -1))
            and p.get("num_head_channels", -1) == -1):
        unsupported.append("num_heads_upsample ≠ num_heads")
    if not isinstance(p.get("num_classes", 0) or 0, int):
        unsupported.append(f"num_classes={p['num_classes']!r}")
    if unsupported or p.get("use_new_attention_order"):
        raise UserError(f"this UNet sets {', '.join(unsupported or ['use_new_attention_order'])}, "
                        f"which latentdiff does not build yet")
    head_channels = int(p.get("num_head_channels", -1))
    cross = bool(p.get("use_spatial_transformer", False))
    context_dim = p.get("context_dim") if cross else None
    if isinstance(context_dim, list):
        context_dim = context_dim[0]
    return UNetConfig(
        in_channels=int(p["in_channels"]), out_channels=int(p["out_channels"]),
        model_channels=int(p["model_channels"]),
        channel_mult=tuple(int(m) for m in p.get("channel_mult", (1, 2, 4, 8))),
        num_res_blocks=int(p["num_res_blocks"]),
        attention_resolutions=tuple(int(r) for r in p["attention_resolutions"]),
        num_heads=-1 if head_channels != -1 else int(p.get("num_heads", -1)),
        head_channels=head_channels,
        dropout=float(p.get("dropout", 0.0)), num_classes=p.get("num_classes"),
        use_scale_shift_norm=bool(p.get("use_scale_shift_norm", False)),
        conv_resample=bool(p.get("conv_resample", True)),
        resblock_updown=bool(p.get("resblock_updown", False)),
        context_dim=None if context_dim is None else int(context_dim),
        transformer_depth=int(p.get("transformer_depth", 1)),
        linear_projection=bool(p.get("use_linear_in_transformer", False)))


def autoencoder_config(first_stage: dict) -> AutoencoderConfig:
    """`first_stage_config` (AutoencoderKL / VQModel / VQModelInterface) → AutoencoderConfig."""
    p = _params(first_stage, "model.params.first_stage_config")
    dd = p.get("ddconfig")
    if not isinstance(dd, dict):
        raise UserError("first_stage_config.params has no ddconfig")
    regularizer = "vq" if "VQ" in _target_name(first_stage) else "kl"
    embed_dim, z_channels = int(p["embed_dim"]), int(dd["z_channels"])
    if embed_dim != z_channels or int(dd.get("out_ch", dd["in_channels"])) != int(dd["in_channels"]):
        raise UserError(f"first stage with embed_dim {embed_dim} ≠ z_channels {z_channels} (or "
                        f"out_ch ≠ in_channels) is not supported")
    if dd.get("attn_type", "vanilla") not in ("vanilla", "none") or p.get("remap"):
        raise UserError("first stage attn_type other than vanilla / none, or a remapped codebook, "
                        "is not supported yet")
    # none: every attention block an identity
    attention = dd.get("attn_type", "vanilla") == "vanilla"
    return AutoencoderConfig(
        in_channels=int(dd["in_channels"]), base_channels=int(dd["ch"]),
        channel_mult=tuple(int(m) for m in dd["ch_mult"]), num_res_blocks=int(dd["num_res_blocks"]),
        attn_resolutions=tuple(int(r) for r in dd.get("attn_resolutions", ())) if attention else (),
        mid_attention=attention, latent_channels=z_channels,
        resolution=int(dd["resolution"]), dropout=float(dd.get("dropout", 0.0)),
        regularizer=regularizer,
        codebook_size=int(p.get("n_embed", 8192)))


def original_config(config: dict) -> OriginalConfig:
    """An original YAML (as a dict) → the configs latentdiff builds from."""
    params = _params(config.get("model") if isinstance(config, dict) else None, "model.params")
    unet = unet_config(_params(params.get("unet_config"), "model.params.unet_config"))
    autoencoder = autoencoder_config(params.get("first_stage_config"))
    beta_schedule = params.get("beta_schedule", "linear")
    if beta_schedule not in BETA_SCHEDULES:
        raise UserError(f"beta_schedule {beta_schedule!r} is unknown; expected one of "
                        f"{', '.join(BETA_SCHEDULES)}")
    schedule = NoiseScheduleConfig(kind=BETA_SCHEDULES[beta_schedule],
                                   num_timesteps=int(params.get("timesteps", 1000)),
                                   beta_start=float(params.get("linear_start", 1e-4)),
                                   beta_end=float(params.get("linear_end", 2e-2)))
    prediction = params.get("parameterization", "eps")
    if prediction not in ("eps", "x0", "v"):
        raise UserError(f"parameterization {prediction!r} is unknown; expected eps, x0 or v")
    return OriginalConfig(unet=unet, autoencoder=autoencoder,
                          schedule=schedule, prediction=prediction,
                          scale_factor=float(params.get("scale_factor", 1.0)),
                          latent_size=int(params.get("image_size", 32)),
                          conditioning_key=params.get("conditioning_key"),
                          cond_stage=_target_name(params.get("cond_stage_config")),
                          cond_stage_params=_cond_stage_params(params.get("cond_stage_config")),
                          use_ema=bool(params.get("use_ema", True)))


ORIGINAL_CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "original"


def detect_original_config(state: dict[str, torch.Tensor]) -> Path:
    """The bundled original YAML for a checkpoint whose keys show a known published architecture (a
    320-wide UNet with 1×1-conv projections and, under cond_stage_model.transformer, either a CLIP
    text encoder: Stable Diffusion v1, 4 input channels, or 9 for SD inpainting; or a 1280-wide
    BERTEmbedder: txt2img-1p4B), or a one-line error asking for --config."""
    conv_in = state.get(UNET + "input_blocks.0.0.weight")
    proj_in = state.get(UNET + "input_blocks.1.1.proj_in.weight")
    sd_unet = conv_in is not None and conv_in.shape[0] == 320 and proj_in is not None and proj_in.ndim == 4
    # BERTEmbedder's x-transformer, also under .transformer.
    bert = state.get(PREFIX + "token_emb.weight")
    if bert is not None and sd_unet and conv_in.shape[1] == 4 and bert.shape[1] == 1280:
        return ORIGINAL_CONFIGS / "txt2img-1p4B-eval.yaml"
    clip = bert is None and any(k.startswith(PREFIX) for k in state)
    if clip and sd_unet and conv_in.shape[1] in (4, 9):
        return ORIGINAL_CONFIGS / ("sd-v1-inference.yaml" if conv_in.shape[1] == 4
                                   else "sd-v1-inpainting-inference.yaml")
    if any(k.startswith("cond_stage_model.model.") for k in state):
        raise UserError("a Stable Diffusion 2.x file does not tell ε from v-prediction by its "
                        f"keys; pass --config {ORIGINAL_CONFIGS / 'sd-v2-inference-v.yaml'} (768-v "
                        "models) or sd-v2-inference.yaml (base)")
    raise UserError("cannot tell the architecture of this checkpoint from its keys; pass the YAML "
                    "it came with (--config)")


def ema_name(unet_parameter: str) -> str:
    """The LitEma shadow of UNet parameter `name`: "model_ema." + "diffusion_model" + name with the
    dots removed."""
    return EMA + ("diffusion_model." + unet_parameter).replace(".", "")


def unet_weights(state: dict[str, torch.Tensor], unet: UNetModel,
                 use_ema: bool | None) -> dict[str, torch.Tensor]:
    """`unet`'s tensors: the EMA shadows when use_ema (None: when the file has all of them), else
    the raw ones."""
    names = list(unet.state_dict())
    have_ema = all(ema_name(n) in state for n in names)
    if use_ema and not have_ema:
        raise UserError("this checkpoint holds no (complete) EMA weights (model_ema.*); load it "
                        "without use_ema")
    if use_ema or (use_ema is None and have_ema):
        return {n: state[ema_name(n)] for n in names}
    return _with_prefix(state, UNET)


def _with_prefix(state: dict[str, torch.Tensor], prefix: str,
                 skip: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k,
            v in state.items() if k.startswith(prefix) and not k[len(prefix):].startswith(skip)}


def _conditioner(cfg: OriginalConfig, state: dict[str, torch.Tensor],
                 tokenizer: str | Path | None) -> tuple[Conditioner | None, bool]:
    """The conditioner for the original cond stage, and whether the model was trained with a null
    condition."""
    kind, stage = cfg.conditioning_key, cfg.cond_stage
    if stage in ("", "__is_unconditional__") or kind is None:
        return None, False
    if kind in ("crossattn", "hybrid") and stage in ("FrozenCLIPEmbedder",
                                                     "FrozenOpenCLIPEmbedder"):
        # SD 1.x / 2.x (10 % empty prompts in training); hybrid: SD inpainting, mask and masked
        # latent concatenated
        max_length = int(cfg.cond_stage_params.get("max_length", 77))
        layer = cfg.cond_stage_params.get("layer", "last") if stage == "FrozenOpenCLIPEmbedder" else None
        encoder = frozen_clip_text(state, max_length,
                                   cfg.cond_stage_params.get("version", DEFAULT_VERSION), tokenizer,
                                   layer)
        return TextConditioner.frozen_text(encoder, masked_image=kind == "hybrid"), True
    # txt2img-1p4B, text2img256: τ_θ trained with the UNet
    if kind == "crossattn" and stage == "BERTEmbedder":
        weights = x_transformer_weights(state)
        text = x_transformer_config(cfg.cond_stage_params, weights)
        vocabulary = bert_tokenizer(tokenizer, text)
        with torch.device("meta"):
            conditioner = TextConditioner(ConditioningConfig(kind="text", text=text), vocabulary)
        assign_weights(conditioner.encoder, weights, "cond_stage_model.transformer", torch.float32)
        # sampled with guidance against "" in the original txt2img script
        return conditioner.eval(), True
    # cin256(-v2): the label as one context token
    if kind == "crossattn" and stage == "ClassEmbedder":
        table = state.get("cond_stage_model.embedding.weight")
        if table is None:
            raise UserError("the checkpoint holds no class embedding "
                            "(cond_stage_model.embedding.weight)")
        text = TextEncoderConfig(width=table.shape[1])
        conditioner = ClassTokenConditioner(ConditioningConfig(kind="class", text=text),
                                            ClassTokenizer(table.shape[0]))
        load_weights(conditioner, {"embedding.weight": table.float()}, "cond_stage_model")
        null = _class_table_has_null(cfg.cond_stage_params, table.shape[0])
        return conditioner.eval().requires_grad_(False), null
    # inpainting_big: [E(masked image), nearest mask]
    if kind == "concat" and stage == "__is_first_stage__":
        config = ConditioningConfig(kind="inpaint", mask_downsampling="nearest")
        return InpaintingConditioner(config, image_channels=cfg.autoencoder.in_channels), False
    # semantic synthesis: one-hot map, resized, 1×1-projected
    if kind == "concat" and stage == "SpatialRescaler":
        return _spatial_rescaler(cfg, state), False
    # super-resolution: low-res pixels at the latent size
    if kind == "concat" and stage == "Identity":
        factor = cfg.autoencoder.downsampling_factor
        return SuperResConditioner(ConditioningConfig(kind="superres", sr_factor=max(factor, 2)),
                                   image_channels=cfg.autoencoder.in_channels), False
    raise UserError(f"cond stage {stage} with conditioning_key {kind!r} is not supported yet; "
                    "latentdiff loads unconditional, class-embedding (num_classes), class-token "
                    "(ClassEmbedder), super-resolution (Identity, concat), semantic synthesis "
                    "(SpatialRescaler, concat), inpainting (__is_first_stage__, concat), "
                    "text-to-image (BERTEmbedder) and Stable Diffusion 1.x / 2.x "
                    "(FrozenCLIPEmbedder, FrozenOpenCLIPEmbedder) models")


# ImageNet's 1000 classes + the null class 1000 (cin256-v2: n_classes 1001, 1001 rows)
IMAGENET_WITH_NULL = 1001


def _class_table_has_null(params: dict, rows: int) -> bool:
    """Whether a ClassEmbedder's last row is the null class that classifier-free guidance steers
    away from: the table has a row beyond n_classes; or the config trains with label dropout
    (`ucg_rate`, whose null is n_classes − 1); or it is cin256-v2's layout, 1001 rows for ImageNet's
    1000 classes (its notebook guides against class 1000)."""
    n_classes = int(params.get("n_classes", 1000))
    return rows > n_classes or float(params.get("ucg_rate", 0.0)) > 0 or rows == IMAGENET_WITH_NULL


def _spatial_rescaler(cfg: OriginalConfig, state: dict[str, torch.Tensor]) -> Conditioner:
    """SpatialRescaler: the one-hot map (in_channels classes) halved `n_stages` times by bilinear
    interpolation (on even sizes exactly the area average latentdiff takes) to the latent size, then
    `channel_mapper` (1×1, no bias)."""
    p = cfg.cond_stage_params
    stages, multiplier = int(p.get("n_stages", 1)), float(p.get("multiplier", 0.5))
    if (p.get("method", "bilinear") != "bilinear" or multiplier != 0.5
            or 2 ** stages != cfg.autoencoder.downsampling_factor):
        raise UserError(f"SpatialRescaler with method {p.get('method')}, multiplier {multiplier}, "
                        f"n_stages {stages} (not halving to the latent size) is not supported")
    weight = state.get("cond_stage_model.channel_mapper.weight")
    classes, embedding = int(p.get("in_channels", 3)), int(p.get("out_channels") or 0)
    if embedding and weight is None:
        raise UserError("the checkpoint holds no cond_stage_model.channel_mapper.weight for its "
                        "SpatialRescaler")
    conditioner = SemanticConditioner(ConditioningConfig(kind="semantic",
                                                         semantic_embedding=embedding),
                                      semantic_classes=classes,
                                      image_channels=cfg.autoencoder.in_channels)
    if embedding:
        load_weights(conditioner, {"channel_mapper.weight": weight.float()}, "cond_stage_model")
    return conditioner.eval().requires_grad_(False)


def assign_weights(module: torch.nn.Module, weights: dict[str, torch.Tensor], source: str,
            dtype: torch.dtype) -> torch.nn.Module:
    """A module built on the meta device (no random initialisation, no memory) given the
    checkpoint's tensors themselves (assign=True: one copy of the weights in memory, cast only when
    the file's dtype differs)."""
    load_weights(module,
                 {k: v.to(dtype) if v.is_floating_point() else v for k, v in weights.items()},
                 source,
                 assign=True)
    return module.eval().requires_grad_(False)


def _original_unet(state: dict[str, torch.Tensor], cfg: UNetConfig,
                   use_ema: bool | None, source: str,
                   dtype: torch.dtype) -> UNetModel:
    with torch.device("meta"):
        unet = UNetModel(cfg)
    return assign_weights(unet, unet_weights(state, unet, use_ema), f"{source} (UNet)", dtype)


def load_original_unet(path: str | Path, cfg: UNetConfig, use_ema: bool | None = None,
                       dtype: torch.dtype = torch.float32) -> UNetModel:
    """Only the UNet of an original file (e.g. to fine-tune or to swap into another system)."""
    return _original_unet(read_state_dict(path), cfg, use_ema, str(path), dtype)


def load_compvis(path: str | Path, config: str | Path | None = None,
                 device: torch.device | str = "cpu",
                 use_ema: bool | None = None, tokenizer: str | Path | None = None,
                 dtype: torch.dtype = torch.float32) -> LatentDiffusion:
    """An original `.ckpt` / `.safetensors` (+ its YAML; None: detected from the
    keys) → LatentDiffusion in eval mode on `device`: the UNet in `dtype`, the autoencoder in fp32
    (fp16 overflows in its decoder: the black images of other tools), a text encoder in fp32
    (`checkpoints.load_model` casts it). `tokenizer`: a local folder with the text encoder's
    tokenizer when it is not in the Hugging Face cache."""
    state = read_state_dict(path)
    if not any(k.startswith(UNET) for k in state):
        raise UserError(f"{path} has no {UNET}* weights: it is not a CompVis latent-diffusion / "
                        f"Stable Diffusion checkpoint")
    cfg = original_config(read_yaml(config if config is not None
                                    else detect_original_config(state)))
    # the YAML says use_ema: False: the original samples the raw weights
    if use_ema is None and not cfg.use_ema:
        use_ema = False
    unet = _original_unet(state, cfg.unet, use_ema, str(path), dtype)
    with torch.device("meta"):
        autoencoder = build_autoencoder(cfg.autoencoder)
    assign_weights(autoencoder, _with_prefix(state, FIRST_STAGE, ("loss.",)),
                   f"{path} (first stage)", torch.float32)
    scale = float(state["scale_factor"]) if "scale_factor" in state else cfg.scale_factor
    codec = LatentCodec(autoencoder,
                        LatentStats.global_scale(scale, cfg.autoencoder.latent_channels))
    conditioner, trained_with_null = _conditioner(cfg, state, tokenizer)
    return LatentDiffusion(unet=unet.to(device), codec=codec.to(device),
                           schedule=NoiseSchedule(cfg.schedule),
                           prediction=cfg.prediction,
                           image_size=cfg.latent_size * cfg.autoencoder.downsampling_factor,
                           conditioner=None if conditioner is None else conditioner.to(device),
                           trained_with_null=trained_with_null)
