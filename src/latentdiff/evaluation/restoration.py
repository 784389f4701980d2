"""Super-resolution on held-out images (the paper's Table 5 at small scale): the LDM's samples
against bicubic upsampling of the same low-resolution input, with the first stage's reconstruction
as the LDM's ceiling.

Each row: PSNR and SSIM (and LPIPS, given its weights) against the original, and the Fréchet
distance between the originals and the outputs in the classifier evaluator's features: the
reconstruction metrics of `metrics/reconstruction.py`, shared with `latentdiff eval-autoencoder`.
"""

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from latentdiff.config import DataConfig
from latentdiff.data import load_dataset, split_holdout, to_model_range
from latentdiff.errors import UserError
from latentdiff.ldm import LatentDiffusion
from latentdiff.metrics.classifier import load_or_train_classifier
from latentdiff.metrics.reconstruction import (ReconstructionRow, format_table,
                                               reconstruct, score_reconstructions)
from latentdiff.pipelines import generate


class SuperresReport:
    def __init__(self, rows: list[ReconstructionRow], factor: int):
        self.rows, self.factor = rows, factor

    def table(self) -> str:
        title = f"×{self.factor} super-resolution of held-out images (rFD: originals vs outputs)"
        return title + "\n" + format_table(self.rows)

    def to_dict(self) -> dict:
        return {"factor": self.factor, "rows": [vars(r) for r in self.rows]}


@torch.no_grad()
def evaluate_superres(model: LatentDiffusion, data_cfg: DataConfig,
                      seeds: Sequence[int] = (0,), n: int | None = None,
                      lpips: Callable | None = None, **sample_options) -> SuperresReport:
    """One row per sampling seed for the LDM, one for bicubic upsampling, one for the autoencoder's
    reconstruction of the originals; n held-out images drawn at random, or all of them; `lpips`
    (`load_lpips`) adds its column (sample_options → `generate`)."""
    conditioner = model.conditioner
    if conditioner is None or not conditioner.restores:
        raise UserError("super-resolution scores need a superres model")
    train, held = split_holdout(load_dataset(data_cfg), data_cfg.holdout, data_cfg.split_seed)
    classifier, _ = load_or_train_classifier(data_cfg, split=(train, held))
    # a random part: held-out data may be ordered (emoji by Unicode group)
    held = held.sample(n) if n else held
    x = to_model_range(held.images).to(model.device)
    factor = conditioner.config.sr_factor
    lowres = conditioner.degrade(x, torch.Generator().manual_seed(0))
    latent_size = (x.shape[-2] // model.codec.downsampling_factor,
                   x.shape[-1] // model.codec.downsampling_factor)
    spatial = conditioner.spatial(latent_size, lowres=lowres)
    f, c = model.codec.downsampling_factor, model.codec.autoencoder.config.latent_channels

    def row(name: str, output: torch.Tensor, params: int | None) -> ReconstructionRow:
        scores = score_reconstructions(x, output, classifier.features, lpips)
        return ReconstructionRow(name, f, c, "—", params, len(x), scores["psnr"],
                                 scores["ssim"], scores["rfd"],
                                 scores.get("lpips"))

    unet_params = sum(p.numel() for p in model.unet.parameters())
    rows = [row(f"LDM-SR seed {seed}",
                generate(model, [seed * len(x) + i for i in range(len(x))], spatial=spatial,
                         **sample_options).to(x), unet_params) for seed in seeds]
    bicubic = F.interpolate(lowres, size=x.shape[-2:], mode="bicubic", align_corners=False).clamp(-1, 1)
    rows.append(row(f"bicubic ×{factor}", bicubic, None))
    rows.append(row("autoencoder (ceiling)", reconstruct(model.codec.autoencoder, x), None))
    return SuperresReport(rows, factor)
