"""VQ-Diffusion checkpoints (`latentdiff train-vq-diffusion`): the code transformer (and τ_θ) with
their EMA copies, the VQ autoencoder, and the configs that rebuild the system."""

from pathlib import Path

import torch

from latentdiff.checkpoints.io import KIND, load_weights, read_tensors, require_kind
from latentdiff.checkpoints.models import VQ_DIFFUSION, load_autoencoder, load_conditioner
from latentdiff.conditioning.kinds import conditioner_metadata
from latentdiff.config import DiTConfig, MaskReplaceConfig, from_dict, to_dict
from latentdiff.discrete_noise import MaskReplaceSchedule
from latentdiff.errors import UserError
from latentdiff.vq_diffusion import CodeTransformer, VQDiffusion


def vq_diffusion_metadata(system: VQDiffusion) -> dict:
    """What rebuilds `system` from its checkpoint: configs, sizes, class names, conditioner."""
    return {KIND: VQ_DIFFUSION, "transformer_config": to_dict(system.transformer.config),
            "num_codes": system.transformer.num_codes,
            "mask_replace_config": to_dict(system.schedule.cfg),
            "autoencoder_config": to_dict(system.autoencoder.config),
            "image_size": system.image_size, "class_names": list(system.class_names),
            "trained_with_null": system.trained_with_null,
            **conditioner_metadata(system.conditioner)}


def load_vq_diffusion(path: str | Path, device: torch.device | str = "cpu",
                      use_ema: bool = True) -> VQDiffusion:
    """The whole system of a `latentdiff train-vq-diffusion` checkpoint, with the EMA weights
    unless use_ema=False."""
    metadata = require_kind(path, VQ_DIFFUSION, "train one with `latentdiff train-vq-diffusion "
                                                "CONFIG`")
    num_codes = int(metadata["num_codes"])
    transformer = CodeTransformer(num_codes, from_dict(DiTConfig, metadata["transformer_config"]))
    prefix = "transformer_ema." if use_ema else "transformer."
    tensors = read_tensors(path, prefix)
    if not tensors:
        raise UserError(f"{path} holds no {prefix}* weights; pass use_ema={not use_ema}")
    load_weights(transformer, tensors, str(path))
    conditioner = load_conditioner(path, metadata, use_ema)
    schedule = MaskReplaceSchedule(from_dict(MaskReplaceConfig, metadata["mask_replace_config"]),
                                   num_codes)
    return VQDiffusion(transformer.eval().requires_grad_(False).to(device),
                       load_autoencoder(path, device), schedule, int(metadata["image_size"]),
                       tuple(metadata.get("class_names", ())),
                       None if conditioner is None else conditioner.to(device),
                       bool(metadata.get("trained_with_null", False)))
