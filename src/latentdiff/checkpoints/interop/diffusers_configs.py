"""diffusers component configs (unet/config.json, vae/config.json, scheduler/scheduler_config.json)
⇄ latentdiff's config dataclasses. What diffusers can express but latentdiff does not build
(and the reverse) is refused by name.
"""

import json
from pathlib import Path

from latentdiff.autoencoder import LatentStats
from latentdiff.config import AutoencoderConfig, NoiseScheduleConfig, UNetConfig
from latentdiff.errors import UserError

DIFFUSERS_VERSION = "0.30.0"  # the configs use nothing newer
# ours → diffusers
BETAS = {"linear": "linear", "scaled_linear": "scaled_linear", "cosine": "squaredcos_cap_v2"}
PREDICTIONS = {"eps": "epsilon", "v": "v_prediction", "x0": "sample"}
# UNet2DConditionModel options that change the architecture away from the LDM / SD UNet: refused
# when set.
UNET_DEFAULTS = {"center_input_sample": False, "flip_sin_to_cos": True,
                 "freq_shift": 0, "act_fn": "silu",
                 "norm_num_groups": 32, "norm_eps": 1e-5, "downsample_padding": 1,
                 "only_cross_attention": False,
                 "dual_cross_attention": False, "class_embed_type": None,
                 "addition_embed_type": None,
                 "time_embedding_type": "positional", "time_cond_proj_dim": None,
                 "encoder_hid_dim": None,
                 "conv_in_kernel": 3, "conv_out_kernel": 3, "num_attention_heads": None,
                 "attention_type": "default",
                 "mid_block_type": "UNetMidBlock2DCrossAttn", "resnet_skip_time_act": False,
                 "class_embeddings_concat": False, "mid_block_only_cross_attention": None,
                 "projection_class_embeddings_input_dim": None, "time_embedding_act_fn": None,
                 "timestep_post_act": None, "reverse_transformer_layers_per_block": None}

# UNet2DModel (diffusers' LDMPipeline UNet: self-attention blocks, no cross-attention) options
# latentdiff builds.
UNET2D_DEFAULTS = {"center_input_sample": False, "time_embedding_type": "positional",
                   "time_embedding_dim": None,
                   "freq_shift": 0, "flip_sin_to_cos": True, "mid_block_type": "UNetMidBlock2D",
                   "mid_block_scale_factor": 1, "downsample_padding": 1, "downsample_type": "conv",
                   "upsample_type": "conv", "act_fn": "silu", "norm_num_groups": 32,
                   "attn_norm_num_groups": None,
                   "norm_eps": 1e-5, "add_attention": True, "class_embed_type": None,
                   "num_train_timesteps": None}


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"{path} is missing; a diffusers folder needs it")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON ({e})") from None

def _heads(cfg: UNetConfig) -> list[int]:
    return [cfg.num_heads if cfg.num_heads != -1 else cfg.model_channels * m // cfg.head_channels
            for m in cfg.channel_mult]


def unet_to_diffusers(cfg: UNetConfig, sample_size: int) -> dict:
    """UNetConfig → UNet2DConditionModel config (its `attention_head_dim` is the head count,
    diffusers' naming), or a UNet2DModel config for UNets without cross-attention
    (`attention_head_dim`: channels per head there)."""
    unsupported = [name for name, on in (("coordinate_channels", cfg.coordinate_channels),
                                         ("position_frequencies", cfg.position_frequencies),
                                         ("pooled_context", cfg.pooled_context),
                                         ("conv_resample=false", not cfg.conv_resample),
                                         ("resblock_updown", cfg.resblock_updown)) if on]
    if unsupported:
        raise UserError(f"this UNet has {', '.join(unsupported)}, which diffusers' "
                        "UNet2DConditionModel / UNet2DModel do not have; keep it as a latentdiff "
                        ".safetensors")
    levels = range(len(cfg.channel_mult))
    attention = [2 ** i in cfg.attention_resolutions for i in levels]
    channels = [cfg.model_channels * m for m in cfg.channel_mult]
    common = {"_diffusers_version": DIFFUSERS_VERSION, "sample_size": sample_size,
              "in_channels": cfg.in_channels,
              "out_channels": cfg.out_channels, "block_out_channels": channels,
              "layers_per_block": cfg.num_res_blocks,
              "num_class_embeds": cfg.num_classes, "dropout": cfg.dropout,
              "resnet_time_scale_shift": "scale_shift" if cfg.use_scale_shift_norm else "default"}
    if cfg.context_dim is None:
        # one head size for every attention block, the middle one (at the last level's width)
        # included
        sizes = ({c // h for c, h, a in zip(channels, _heads(cfg), attention) if a}
                 | {channels[-1] // _heads(cfg)[-1]})
        if len(sizes) != 1:
            raise UserError(f"this UNet's attention heads have {sorted(sizes)} channels at "
                            "different levels; diffusers' UNet2DModel has one head size (set "
                            "unet.head_channels)")
        size = sizes.pop()
        return {"_class_name": "UNet2DModel", **common,
                "down_block_types": ["AttnDownBlock2D" if a else "DownBlock2D" for a in attention],
                "up_block_types": ["AttnUpBlock2D" if a else "UpBlock2D"
                                   for a in reversed(attention)],
                "attention_head_dim": size, **UNET2D_DEFAULTS}
    return {"_class_name": "UNet2DConditionModel", **common,
            "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention],
            "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D"
                               for a in reversed(attention)],
            "attention_head_dim": _heads(cfg), "cross_attention_dim": cfg.context_dim,
            "transformer_layers_per_block": cfg.transformer_depth,
            "use_linear_projection": cfg.linear_projection,
            "upcast_attention": False, **UNET_DEFAULTS}


def _uniform(value, what: str) -> int:
    values = set(value) if isinstance(value, list | tuple) else {value}
    if len(values) != 1:
        raise UserError(f"unet/config.json: {what}={value} differs between levels, which "
                        "latentdiff does not build")
    return int(values.pop())


def unet_from_diffusers(c: dict) -> UNetConfig:
    """UNet2DConditionModel or UNet2DModel config → UNetConfig, or a one-line error naming the
    option latentdiff does not build."""
    kind = c.get("_class_name", "UNet2DConditionModel")
    if kind not in ("UNet2DConditionModel", "UNet2DModel"):
        raise UserError(f"unet/ holds a {kind}; latentdiff loads UNet2DConditionModel and "
                        "UNet2DModel folders")
    plain = kind == "UNet2DModel"
    defaults, attn = (UNET2D_DEFAULTS, "Attn") if plain else (UNET_DEFAULTS, "CrossAttn")
    odd = [k for k,
           v in defaults.items() if k in c and c[k] != v
           and not (k == "norm_eps" and abs(c[k] - v) < 1e-12)]
    odd += [f"{k}={c[k]}" for k in ("down_block_types", "up_block_types") if any(
        t not in (f"{attn}DownBlock2D", "DownBlock2D", f"{attn}UpBlock2D", "UpBlock2D")
        for t in c.get(k, []))]
    if odd:
        raise UserError(f"unet/config.json sets {', '.join(odd)}, which latentdiff does not build")
    channels = [int(v) for v in c["block_out_channels"]]
    if any(v % channels[0] for v in channels):
        raise UserError(f"unet/config.json: block_out_channels {channels} are not multiples "
                        "of the first")
    attention = [t.startswith(attn) for t in c["down_block_types"]]
    if [t.startswith(attn) for t in reversed(c["up_block_types"])] != attention:
        raise UserError("unet/config.json: up_block_types do not mirror down_block_types")
    if plain:  # attention_head_dim: channels per head (null: one head of all channels)
        size = c.get("attention_head_dim", 8)
        heads = ({"num_heads": 1, "head_channels": -1} if size is None
                 else {"num_heads": -1, "head_channels": int(size)})
    else:  # attention_head_dim: the head count (diffusers' naming in this class)
        counts = c.get("attention_head_dim", 8)
        counts = [int(counts)] * len(channels) if isinstance(counts, int) else [int(h) for h in counts]
        heads = {"num_heads": counts[0], "head_channels": -1} if len(set(counts)) == 1 else {
            "num_heads": -1,
            "head_channels": _uniform([ch // h for ch, h in zip(channels, counts)],
                                      "channels per head")}
    return UNetConfig(
        in_channels=int(c["in_channels"]), out_channels=int(c["out_channels"]),
        model_channels=channels[0],
        channel_mult=tuple(v // channels[0] for v in channels),
        num_res_blocks=_uniform(c.get("layers_per_block", 2), "layers_per_block"),
        attention_resolutions=tuple(2 ** i for i, a in enumerate(attention) if a), **heads,
        dropout=float(c.get("dropout", 0.0)), num_classes=c.get("num_class_embeds"),
        use_scale_shift_norm=c.get("resnet_time_scale_shift", "default") == "scale_shift",
        context_dim=None if plain else _uniform(c["cross_attention_dim"], "cross_attention_dim"),
        transformer_depth=1 if plain else _uniform(c.get("transformer_layers_per_block", 1),
                                                   "transformer_layers_per_block"),
        linear_projection=bool(c.get("use_linear_projection", False)))


def autoencoder_to_diffusers(cfg: AutoencoderConfig, stats: LatentStats) -> dict:
    """AutoencoderConfig + latent normalisation → AutoencoderKL / VQModel config (per-channel
    statistics as latents_mean / latents_std with scaling_factor 1, as SDXL-style VAEs)."""
    if cfg.residual_shortcuts or cfg.attn_resolutions:
        raise UserError("this autoencoder has residual shortcuts or attention outside its mid "
                        "block, which diffusers' AutoencoderKL/VQModel do not have; keep it as a "
                        "latentdiff .safetensors")
    levels = len(cfg.channel_mult)
    config = {"_class_name": "VQModel" if cfg.regularizer == "vq" else "AutoencoderKL",
              "_diffusers_version": DIFFUSERS_VERSION, "in_channels": cfg.in_channels,
              "out_channels": cfg.in_channels,
              "down_block_types": ["DownEncoderBlock2D"] * levels,
              "up_block_types": ["UpDecoderBlock2D"] * levels,
              "block_out_channels": [cfg.base_channels * m for m in cfg.channel_mult],
              "layers_per_block": cfg.num_res_blocks, "act_fn": "silu",
              "latent_channels": cfg.latent_channels,
              "norm_num_groups": cfg.norm_groups, "sample_size": cfg.resolution,
              "mid_block_add_attention": cfg.mid_attention}
    if cfg.regularizer == "vq":
        config |= {"num_vq_embeddings": cfg.codebook_size,
                   "vq_embed_dim": cfg.latent_channels, "norm_type": "group",
                   "lookup_from_codebook": False, "force_upcast": False}
    else:
        config |= {"force_upcast": True, "use_quant_conv": True, "use_post_quant_conv": True}
    if len(set(stats.scale)) == 1 and len(set(stats.shift)) == 1:
        return config | {"scaling_factor": stats.scale[0], "shift_factor": stats.shift[0] or None}
    return config | {"scaling_factor": 1.0, "latents_mean": list(stats.shift),
                     "latents_std": [1 / s for s in stats.scale]}


def autoencoder_from_diffusers(c: dict) -> tuple[AutoencoderConfig, LatentStats]:
    kind = c.get("_class_name", "AutoencoderKL")
    if kind not in ("AutoencoderKL", "VQModel"):
        raise UserError(f"the first stage is a {kind}; latentdiff loads AutoencoderKL and "
                        "VQModel folders")
    channels = [int(v) for v in c["block_out_channels"]]
    odd = [f"{k}={c[k]}" for k,
           ok in (("act_fn", "silu"), ("norm_type", "group"), ("use_quant_conv", True),
                   ("use_post_quant_conv", True))
           if k in c and c[k] != ok] + (["out_channels ≠ in_channels"]
                                        if c.get("out_channels", 3) != c.get(
               "in_channels", 3) else [])
    if odd or any(v % channels[0] for v in channels):
        raise UserError(f"{kind} config sets {', '.join(odd) or f'block_out_channels {channels}'}, "
                        f"which latentdiff does not build")
    latent = int(c.get("latent_channels", 4))
    cfg = AutoencoderConfig(in_channels=int(c.get("in_channels", 3)), base_channels=channels[0],
                            channel_mult=tuple(v // channels[0] for v in channels),
                            num_res_blocks=int(c.get("layers_per_block", 1)),
                            latent_channels=latent,
                            resolution=int(c.get("sample_size", 256)),
                            regularizer="vq" if kind == "VQModel" else "kl",
                            codebook_size=int(c.get("num_vq_embeddings", 256)),
                            norm_groups=int(c.get("norm_num_groups", 32)),
                            mid_attention=bool(c.get("mid_block_add_attention", True)))
    scaling = float(c.get("scaling_factor", 1.0))
    if c.get("latents_mean") is not None and c.get("latents_std") is not None:
        stats = LatentStats(c["latents_mean"], [scaling / s for s in c["latents_std"]])
    else:
        stats = LatentStats((float(c.get("shift_factor") or 0.0),) * latent, (scaling,) * latent)
    return cfg, stats


def scheduler_to_diffusers(schedule: NoiseScheduleConfig, prediction: str) -> dict:
    """The noise schedule as a DDIMScheduler config: Stable Diffusion's timesteps (steps_offset 1),
    and the last step to ᾱ = 1 (set_alpha_to_one) as latentdiff's grids end at σ = 0, so that
    diffusers samples what latentdiff does. Continuous-time models (EDM, flow, karras or shifted
    schedules) have no such scheduler: a one-line error."""
    if schedule.kind not in BETAS or prediction not in PREDICTIONS or schedule.shift != 1.0:
        raise UserError(f"a diffusers DDIMScheduler cannot describe prediction={prediction} on "
                        f"schedule kind={schedule.kind}, shift={schedule.shift:g}; export models "
                        "with a β schedule and eps, x0 or v prediction, or keep the latentdiff "
                        "checkpoint")
    return {"_class_name": "DDIMScheduler", "_diffusers_version": DIFFUSERS_VERSION,
            "num_train_timesteps": schedule.num_timesteps, "beta_start": schedule.beta_start,
            "beta_end": schedule.beta_end, "beta_schedule": BETAS[schedule.kind],
            "prediction_type": PREDICTIONS[prediction],
            "rescale_betas_zero_snr": schedule.zero_terminal_snr,
            "clip_sample": False, "set_alpha_to_one": True, "steps_offset": 1,
            "timestep_spacing": "leading"}


def scheduler_from_diffusers(c: dict) -> tuple[NoiseScheduleConfig, str]:
    if c.get("trained_betas") is not None:
        raise UserError("scheduler_config.json lists trained_betas; latentdiff builds linear, "
                        "scaled_linear and squaredcos_cap_v2 schedules")
    betas = {v: k for k, v in BETAS.items()}
    predictions = {v: k for k, v in PREDICTIONS.items()}
    beta, prediction = c.get("beta_schedule", "linear"), c.get("prediction_type", "epsilon")
    if beta not in betas or prediction not in predictions:
        raise UserError(f"scheduler_config.json: beta_schedule {beta!r} / prediction_type "
                        f"{prediction!r} is not one of {', '.join(betas)} / "
                        f"{', '.join(predictions)}")
    schedule = NoiseScheduleConfig(kind=betas[beta],
                                   num_timesteps=int(c.get("num_train_timesteps", 1000)),
                                   beta_start=float(c.get("beta_start", 1e-4)),
                                   beta_end=float(c.get("beta_end", 0.02)),
                                   zero_terminal_snr=bool(c.get("rescale_betas_zero_snr", False)))
    return schedule, predictions[prediction]
