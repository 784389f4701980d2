"""`latentdiff eval-autoencoder`: the paper's Table 8 for trained first stages on held-out images —
PSNR, SSIM, rFD in the evaluator's features, LPIPS when weights are given, VQ codebook usage —
beside bicubic ↓f↑f rows."""

import logging
from pathlib import Path

import torch

from latentdiff.autoencoder import AutoencoderVQ
from latentdiff.autoencoder.perceptual import load_lpips
from latentdiff.autoencoder.tiling import tiled_decode, tiled_encode
from latentdiff.checkpoints.io import read_metadata
from latentdiff.checkpoints.models import load_autoencoder
from latentdiff.config import DataConfig, from_dict
from latentdiff.data import load_dataset, split_holdout, to_model_range, to_uint8
from latentdiff.errors import UserError
from latentdiff.images import save_image_grid
from latentdiff.metrics.classifier import load_or_train_classifier
from latentdiff.metrics.reconstruction import (ReconstructionRow, bicubic_roundtrip,
                                               codebook_usage, reconstruct,
                                               score_reconstructions)

log = logging.getLogger(__name__)


def stored_data_config(checkpoint: str | Path) -> DataConfig:
    """The data config a checkpoint was trained with."""
    config = read_metadata(checkpoint).get("config", {})
    return from_dict(DataConfig, config.get("data") or {})


def evaluate_autoencoders(checkpoints: list[str | Path], data_cfg: DataConfig, device: str = "cpu",
                          lpips_weights: str | None = None, vgg16_weights: str | None = None,
                          tile: int | None = None, overlap: int = 16,
                          samples: Path | None = None,
                          bicubic: bool = True) -> list[ReconstructionRow]:
    """One row per checkpoint on the held-out split of `data_cfg`, plus a bicubic row per distinct
    f.

    tile: encode/decode in tiles of this many pixels (latents: tile/f) with `overlap` pixels of
    overlap. samples: write originals (first row) above each model's reconstructions
    (one row per model) to this PNG.
    """
    for path in checkpoints:  # before any data is read
        f = 2 ** (len(read_metadata(path).get("autoencoder_config", {}).get("channel_mult", [1])) - 1)
        if data_cfg.image_size % f:
            fixed = max(f, round(data_cfg.image_size / f) * f)
            raise UserError(f"image size {data_cfg.image_size} is not a multiple of {path}'s "
                            f"downsampling factor f={f}; use --image-size {fixed}")
    train, heldout = split_holdout(load_dataset(data_cfg), data_cfg.holdout, data_cfg.split_seed)
    if not len(heldout):
        raise UserError("the held-out split is empty; set --holdout to a positive number")
    x = to_model_range(heldout.images).to(device)
    features = None
    if heldout.num_classes:
        evaluator, accuracy = load_or_train_classifier(data_cfg, split=(train, heldout))
        evaluator = evaluator.to(device)
        features = evaluator.features
        log.info("evaluator: held-out accuracy %.3f on %s", accuracy, data_cfg.dataset)
    lpips = load_lpips(lpips_weights, vgg16_weights).to(device) if lpips_weights else None
    rows, shown, factors = [], [x[:8]], []
    for path in checkpoints:
        autoencoder = load_autoencoder(path, device)
        cfg = autoencoder.config
        if cfg.in_channels != heldout.channels:
            raise UserError(f"{path} takes {cfg.in_channels}-channel images, the data has "
                            f"{heldout.channels}; choose matching data")
        encode = decode = None
        if tile:
            f = cfg.downsampling_factor
            encode = lambda t, a=autoencoder: tiled_encode(a, t, tile, overlap)  # noqa: E731
            decode = lambda z, a=autoencoder, f=f: tiled_decode(a, z, tile // f, overlap // f)  # noqa: E731
        recon = reconstruct(autoencoder, x, encode=encode, decode=decode)
        scores = score_reconstructions(x, recon, features, lpips)
        usage = codebook_usage(autoencoder, x) if isinstance(autoencoder, AutoencoderVQ) else (None, None)
        rows.append(ReconstructionRow(_model_name(Path(path)), cfg.downsampling_factor,
                                      cfg.latent_channels, cfg.regularizer.upper(),
                                      sum(p.numel() for p in autoencoder.parameters()), len(x),
                                      codebook_usage=usage[0], perplexity=usage[1], **scores))
        shown.append(recon[:8])
        factors.append(cfg.downsampling_factor)
    if bicubic:
        for f in sorted(set(factors)):
            scores = score_reconstructions(x, bicubic_roundtrip(x, f), features, lpips)
            rows.append(ReconstructionRow(f"bicubic ↓{f}↑{f}", f, heldout.channels, "—",
                                          None, len(x), **scores))
    if samples is not None:
        save_image_grid(to_uint8(torch.cat(shown).cpu()), samples, ncols=len(shown[0]))
    return rows


def _model_name(path: Path) -> str:
    """runs/NAME/checkpoints/last.safetensors → NAME; any other file → its stem."""
    return path.parent.parent.name if path.parent.name == "checkpoints" else path.stem
