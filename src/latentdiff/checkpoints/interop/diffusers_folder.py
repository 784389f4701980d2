"""diffusers pipeline folders ⇄ `LatentDiffusion`: model_index.json, unet/, vae/ (or vqvae/),
scheduler/, and for text models text_encoder/ + tokenizer/.

Loading reads every architecture (UNet2DConditionModel, or UNet2DModel for UNets without
cross-attention: LDMPipeline folders) from the folder's own config files (`diffusers_configs.py`)
and renames the weights (`diffusers_names.py`); the text encoder and tokenizer are `transformers`
folders read locally (Stable Diffusion 1.x and 2.x folders hold a CLIPTextModel whose last hidden
state is the context). Saving writes the same layout: a model with a frozen `transformers` text
encoder becomes a `StableDiffusionPipeline` folder that diffusers runs as it is. What diffusers has
no component for (latentdiff's jointly trained τ_θ with its tokenizer, class names, concatenated
conditioning) goes to `latentdiff.json` and text_encoder/latentdiff_conditioner.safetensors, which
`load_diffusers` reads back; diffusers still loads such a folder's unet/, vae/ and scheduler/. The
folder is written under a temporary name beside its destination and renamed into place when
complete.
"""

import copy
import json
from pathlib import Path

import torch

from latentdiff.autoencoder import LatentCodec, build_autoencoder
from latentdiff.autoencoder.pixel import PixelSpace
from latentdiff.checkpoints.interop.compvis import assign_weights
from latentdiff.checkpoints.interop.dit import load_diffusers_dit
from latentdiff.checkpoints.interop.diffusers_configs import (
    autoencoder_from_diffusers, autoencoder_to_diffusers, read_json, scheduler_from_diffusers,
    scheduler_to_diffusers, unet_from_diffusers, unet_to_diffusers)
from latentdiff.checkpoints.interop.diffusers_names import (
    autoencoder_blocks, convert_names, fuse_qkv, self_attention_heads, split_qkv, unet_blocks)
from latentdiff.checkpoints.interop.files import read_state_dict
from latentdiff.checkpoints.io import prefixed, save_checkpoint, write_safetensors
from latentdiff.checkpoints.models import load_conditioner, torch_dtype
from latentdiff.conditioning.conditioner import Conditioner
from latentdiff.conditioning.kinds import conditioner_metadata
from latentdiff.conditioning.pretrained import PretrainedText, import_transformers
from latentdiff.conditioning.text import TextConditioner
from latentdiff.config import UNetConfig
from latentdiff.errors import UserError
from latentdiff.files import atomic_folder
from latentdiff.ldm import LatentDiffusion
from latentdiff.network import ExpertNetwork
from latentdiff.noise import NoiseSchedule
from latentdiff.unet import UNetModel

WEIGHTS = "diffusion_pytorch_model"  # .safetensors, .bin, or sharded with .safetensors.index.json
EXTRAS, CONDITIONER = "latentdiff.json", "latentdiff_conditioner.safetensors"
INPAINT_PIPELINE = "StableDiffusionInpaintPipeline"  # text + [mask, E(masked image)] concatenated


def is_diffusers_folder(path: Path) -> bool:
    return path.is_dir() and (path / "model_index.json").is_file()


def _write_component(folder: Path, config: dict, state: dict[str, torch.Tensor],
                     dtype: torch.dtype) -> None:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    tensors = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k,
               v in state.items()}
    write_safetensors(folder / f"{WEIGHTS}.safetensors", tensors, {"format": "pt"})


def _renamed(state: dict[str, torch.Tensor], blocks, to_diffusers: bool,
             what: str) -> dict[str, torch.Tensor]:
    out, unclaimed = convert_names(state, blocks, to_diffusers)
    if unclaimed:
        raise UserError(f"{what}: {len(unclaimed)} weights have no counterpart "
                        f"({', '.join(unclaimed[:4])}); the architecture does not match its config")
    return out


def save_diffusers(model: LatentDiffusion, folder: str | Path, dtype: str = "fp32") -> Path:
    """Write `model` as a diffusers pipeline folder (a new folder; floats in `dtype`, fp32 | fp16 |
    bf16)."""
    folder, target = Path(folder), torch_dtype(dtype)
    if folder.exists():
        raise UserError(f"{folder} exists; give a new folder for the diffusers pipeline")
    conditioner = model.conditioner
    autoencoder = model.codec.autoencoder
    if isinstance(autoencoder, PixelSpace):
        raise UserError("a pixel-space model (autoencoder: pixels) has no autoencoder to write as "
                        "a diffusers vae/; convert it to a .safetensors file instead")
    if autoencoder.config.pyramid_levels > 1:
        raise UserError("diffusers has no feature-pyramid autoencoder (Frido) nor coarse-to-fine "
                        "sampling; convert this model to a .safetensors file instead")
    if not isinstance(model.unet.config, UNetConfig) or isinstance(model.unet, ExpertNetwork):
        raise UserError("writing a diffusers folder needs a single UNet; this model's network is "
                        "not one: convert it to a .safetensors file instead")
    unet_config = unet_to_diffusers(model.unet.config, model.latent_shape[1])
    vae_config = autoencoder_to_diffusers(autoencoder.config, model.codec.stats)
    vae_name = "vqvae" if vae_config["_class_name"] == "VQModel" else "vae"
    frozen = conditioner is not None and conditioner.frozen
    # StableDiffusionPipeline passes no mask
    runs_in_diffusers = frozen and conditioner.tokenizer.attend_to_padding
    pipeline = INPAINT_PIPELINE if frozen and conditioner.config.masked_image else "StableDiffusionPipeline"
    # LDMPipeline: unconditional, vqvae/, latents / scaling_factor
    if unet_config["_class_name"] == "UNet2DModel":
        runs_in_diffusers = (conditioner is None and vae_name == "vqvae"
                             and model.unet.config.num_classes is None
                             and vae_config.get("shift_factor") is None
                             and "latents_mean" not in vae_config)
        pipeline = "LDMPipeline"
    index = {"_class_name": pipeline if runs_in_diffusers else "LatentDiffusionPipeline",
             "_diffusers_version": unet_config["_diffusers_version"],
             "unet": ["diffusers", unet_config["_class_name"]],
             vae_name: ["diffusers", vae_config["_class_name"]],
             "scheduler": ["diffusers", "DDIMScheduler"]}
    extras = {"image_size": model.image_size, "class_names": list(model.class_names),
              "trained_with_null": model.trained_with_null, **conditioner_metadata(conditioner)}
    scheduler = scheduler_to_diffusers(model.schedule.config, model.prediction)
    with atomic_folder(folder) as tmp:
        unet_weights = split_qkv(model.unet.state_dict(), self_attention_heads(model.unet))
        _write_component(tmp / "unet", unet_config,
                         _renamed(unet_weights, unet_blocks(model.unet.config), True,
                                  "UNet"), target)
        _write_component(tmp / vae_name, vae_config, _renamed(autoencoder.state_dict(),
                                                              autoencoder_blocks(autoencoder.config), True,
                                                              "autoencoder"), torch.float32)
        (tmp / "scheduler").mkdir()
        (tmp / "scheduler" / "scheduler_config.json").write_text(
            json.dumps(scheduler, indent=2) + "\n")
        if frozen:
            encoder = conditioner.tokenizer
            copy.deepcopy(encoder.source).to(target).save_pretrained(tmp / "text_encoder")
            encoder.tokenizer.save_pretrained(tmp / "tokenizer")
            index |= {"text_encoder": ["transformers", type(encoder.source).__name__],
                      "tokenizer": ["transformers", type(encoder.tokenizer).__name__],
                      "safety_checker": [None, None], "feature_extractor": [None, None],
                      "requires_safety_checker": False, "image_encoder": [None, None]}
            extras["conditioning_config"]["text"]["pretrained"] = "text_encoder"
        # latentdiff's own τ_θ / class embedding
        elif conditioner is not None and conditioner.has_weights:
            save_checkpoint(tmp / "text_encoder" / CONDITIONER,
                            prefixed("conditioner.", conditioner.state_dict()), {})
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
        (tmp / EXTRAS).write_text(json.dumps(extras, indent=1) + "\n")
    return folder


def with_variant(name: str, variant: str | None) -> str:
    """diffusers' variant file name: the variant before the last suffix
    (x.safetensors → x.fp16.safetensors,
    x.safetensors.index.json → x.safetensors.index.fp16.json)."""
    if variant is None:
        return name
    stem, suffix = name.rsplit(".", 1)
    return f"{stem}.{variant}.{suffix}"


def folder_variant(folder: Path, requested: str | None) -> str | None:
    """The weight variant to read: `requested`, else None when unet/ has plain weights, else the one
    variant it has (e.g. only diffusion_pytorch_model.fp16.safetensors: "fp16"); several → a
    one-line error asking for --variant."""
    unet = folder / ("transformer" if (folder / "transformer").is_dir() else "unet")
    if requested is not None or any((unet / f"{WEIGHTS}.{ext}").is_file()
                                    for ext in ("safetensors", "bin", "safetensors.index.json")):
        return requested
    found = sorted({p.name[len(WEIGHTS) + 1:].split(".")[0].split("-")[0]
                    for p in unet.glob(f"{WEIGHTS}.*.*")}
                   - {"safetensors", "bin"})
    if len(found) > 1:
        raise UserError(f"{unet} holds the weight variants {', '.join(found)} and no plain "
                        f"weights; pick one with --variant")
    return found[0] if found else None


def read_component(folder: Path, variant: str | None = None) -> dict[str, torch.Tensor]:
    """The weights of one diffusers component folder: safetensors (one file or shards) or a
    weights-only pickle; `variant` (e.g. "fp16"): diffusers' variant files
    (diffusion_pytorch_model.fp16.safetensors …) where the folder has them, else its plain
    weights."""
    # a component without the variant: its plain weights, as diffusers
    for choice in dict.fromkeys((variant, None)):
        for name in (f"{WEIGHTS}.safetensors", f"{WEIGHTS}.bin"):
            if (folder / with_variant(name, choice)).is_file():
                return read_state_dict(folder / with_variant(name, choice))
        index = folder / with_variant(f"{WEIGHTS}.safetensors.index.json", choice)
        if index.is_file():
            shards = sorted(set(read_json(index).get("weight_map", {}).values()))
            return {k: v for shard in shards for k, v in read_state_dict(folder / shard).items()}
    raise UserError(f"{folder} has no {with_variant(f'{WEIGHTS}.safetensors', variant)} / "
                    ".bin weights")


def _frozen_text(folder: Path, tokenizer: str | Path | None, dtype: torch.dtype, text: dict | None,
                 masked_image: bool, variant: str | None) -> Conditioner:
    """The pipeline's transformers text encoder (text_encoder/, tokenizer/) as a frozen text
    conditioner; `text`: latentdiff's record of its context length and padding mask, else Stable
    Diffusion's (all positions attended); `masked_image`: an inpainting pipeline's mask and masked
    latent are concatenated too."""
    transformers = import_transformers()
    source = Path(tokenizer) if tokenizer is not None else folder / "tokenizer"
    try:
        tok = transformers.AutoTokenizer.from_pretrained(source, local_files_only=True)
        has_variant = variant is not None and any((folder / "text_encoder").glob(f"*.{variant}.*"))
        model = transformers.AutoModel.from_pretrained(folder / "text_encoder",
                                                       local_files_only=True,
                                                       torch_dtype=dtype,
                                                       variant=variant if has_variant else None)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load the text encoder of {folder}: "
                        f"{str(e).splitlines()[0]}") from None
    max_length = int(text["max_length"]) if text else int(tok.model_max_length)
    attend = bool(text["attend_to_padding"]) if text else True
    encoder = PretrainedText(tok, model, max_length, attend, folder=folder / "text_encoder")
    return TextConditioner.frozen_text(encoder, masked_image, pretrained="text_encoder")


def _conditioner(folder: Path, index: dict, extras: dict, tokenizer: str | Path | None,
                 dtype: torch.dtype, variant: str | None) -> Conditioner | None:
    """latentdiff's record of the conditioner when the folder has one, else Stable Diffusion's text
    conditioning."""
    cfg = extras.get("conditioning_config")
    if cfg is not None and not (cfg["kind"] == "text" and cfg["text"].get("pretrained")):
        return load_conditioner(folder / "text_encoder" / CONDITIONER, extras, use_ema=False)
    if (folder / "text_encoder").is_dir():
        masked_image = cfg.get("masked_image", False) if cfg else index.get("_class_name") == INPAINT_PIPELINE
        return _frozen_text(folder, tokenizer, dtype,
                            cfg["text"] if cfg else None, masked_image, variant)
    return None


def load_diffusers_unet(folder: str | Path, variant: str | None = None,
                        dtype: torch.dtype = torch.float32) -> UNetModel:
    """Only the UNet of a diffusers folder (its unet/: config.json + weights), in eval mode: built
    on the meta device and given the file's tensors (memory-mapped; cast only when `dtype`
    differs)."""
    folder = Path(folder)
    cfg = unet_from_diffusers(read_json(folder / "config.json"))
    with torch.device("meta"):
        unet = UNetModel(cfg)
    weights = fuse_qkv(_renamed(read_component(folder, variant),
                                unet_blocks(cfg), False, str(folder)),
                       self_attention_heads(unet))
    return assign_weights(unet, weights, str(folder), dtype)


def load_diffusers(folder: str | Path, device: torch.device | str = "cpu",
                   tokenizer: str | Path | None = None,
                   dtype: torch.dtype = torch.float32,
                   variant: str | None = None) -> LatentDiffusion:
    """A diffusers pipeline folder → LatentDiffusion in eval mode: the UNet in `dtype`, the
    autoencoder in fp32. `tokenizer`: a local tokenizer folder when the pipeline's tokenizer/ is
    missing; `variant`: the weight files to read (e.g. "fp16"; None: the plain ones, or the only
    variant there is — `folder_variant`)."""
    folder = Path(folder)
    variant = folder_variant(folder, variant)
    index = read_json(folder / "model_index.json")
    # a DiTPipeline: transformer/ (DiTTransformer2DModel) instead of unet/
    network_folder = folder / ("transformer" if (folder / "transformer").is_dir() else "unet")
    unet_json = read_json(network_folder / "config.json")
    vae_folder = next((folder / n for n in ("vae", "vqvae") if (folder / n / "config.json").is_file()), None)
    if vae_folder is None:
        raise UserError(f"{folder} has no vae/ or vqvae/ with a config.json")
    ae_cfg, stats = autoencoder_from_diffusers(read_json(vae_folder / "config.json"))
    schedule, prediction = scheduler_from_diffusers(read_json(folder / "scheduler" / "scheduler_config.json"))
    extras = read_json(folder / EXTRAS) if (folder / EXTRAS).is_file() else {}
    unet = (load_diffusers_dit(network_folder, variant, dtype) if network_folder.name == "transformer"
            else load_diffusers_unet(network_folder, variant, dtype))
    with torch.device("meta"):
        autoencoder = build_autoencoder(ae_cfg)
    assign_weights(autoencoder,
                   _renamed(read_component(vae_folder, variant), autoencoder_blocks(ae_cfg), False,
                            str(vae_folder)), str(vae_folder), torch.float32)
    conditioner = _conditioner(folder, index, extras, tokenizer, dtype, variant)
    latent_size = int(unet_json.get("sample_size", 64))
    return LatentDiffusion(unet=unet.to(device), codec=LatentCodec(autoencoder, stats).to(device),
                           schedule=NoiseSchedule(schedule), prediction=prediction,
                           image_size=int(extras.get("image_size",
                                                     latent_size * ae_cfg.downsampling_factor)),
                           class_names=tuple(extras.get("class_names", ())),
                           conditioner=None if conditioner is None else conditioner.to(device),
                           trained_with_null=bool(extras.get("trained_with_null",
                                                             conditioner is not None
                                                             or unet.config.num_classes is not None)))
