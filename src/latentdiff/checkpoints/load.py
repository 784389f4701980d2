"""`load_model`: a `LatentDiffusion` from a checkpoint of any supported format (ours, diffusers,
CompVis)."""

from pathlib import Path

import torch

from latentdiff.checkpoints.interop.compvis import load_compvis
from latentdiff.checkpoints.interop.diffusers_folder import is_diffusers_folder, load_diffusers
from latentdiff.checkpoints.io import KIND, read_metadata
from latentdiff.checkpoints.models import load_latent_diffusion
from latentdiff.errors import UserError
from latentdiff.ldm import LatentDiffusion


def is_latentdiff_checkpoint(path: Path) -> bool:
    return path.suffix == ".safetensors" and path.is_file() and KIND in read_metadata(path)


def load_model(path: str | Path, config: str | Path | None = None,
               device: torch.device | str = "cpu",
               use_ema: bool | None = None, tokenizer: str | Path | None = None,
               dtype: torch.dtype = torch.float32, variant: str | None = None) -> LatentDiffusion:
    """A LatentDiffusion from any supported checkpoint: a `latentdiff train`/`export` file, a
    diffusers pipeline folder (model_index.json), or an original CompVis / Stable Diffusion
    `.ckpt`/`.safetensors` with its YAML `config` (None: detected from the keys when the
    architecture is a known published one). use_ema None: the EMA weights when present (an original
    YAML's use_ema decides for its file); `tokenizer`: a local folder for a text encoder's tokenizer
    that the checkpoint does not hold; `dtype`: of the UNet and the text encoder (the autoencoder
    stays fp32); `variant`: a diffusers folder's weight variant (e.g. fp16). An option that the
    format does not use is an error, never silently ignored."""
    path = Path(path)
    latentdiff_file, folder = is_latentdiff_checkpoint(path), is_diffusers_folder(path)
    unused = {"--config": (config is not None and (latentdiff_file or folder),
                           "it carries its own configuration"),
              "--tokenizer": (tokenizer is not None and latentdiff_file,
                              "it carries its own tokenizer"),
              "--variant": (variant is not None and path.is_file(),
                            "only diffusers folders have weight variants")}
    for option, (ignored, reason) in unused.items():  # an option that would be silently ignored
        if ignored:
            raise UserError(f"{option} does not apply to {path}: {reason}; leave it out")
    if latentdiff_file:
        model = load_latent_diffusion(path, device, use_ema=use_ema is not False)
    elif folder:
        model = load_diffusers(path, device, tokenizer, dtype, variant)
    else:
        model = load_compvis(path, config, device, use_ema, tokenizer, dtype)
    model.unet.to(dtype)  # load_compvis builds it in dtype already
    if model.conditioner is not None and model.conditioner.frozen:
        model.conditioner.tokenizer.model.to(dtype)
    return model
