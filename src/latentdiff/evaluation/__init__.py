"""Evaluations of trained models, above the pipelines they sample with; `metrics/` holds the pure
measures.

`evaluate(model, data_cfg, ...)` picks the one that fits the model (or sample quality when asked):
- `sample_quality.py`: FD / KID / precision-recall / IS against a real-vs-real baseline (`latentdiff
  eval --quality`; the default for unconditional models);
- `conditional.py`: class-conditional models: accuracy of the data's own classifier, FD per seed;
- `restoration.py`: super-resolution models against bicubic and the autoencoder's reconstruction;
- `alignment.py`: text and layout models over guidance scales against real and shuffled baselines;
- `autoencoder.py`: first stages' reconstruction table (`latentdiff eval-autoencoder`).
A new evaluation is one module here and one branch in `evaluate`.
"""

from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from latentdiff.autoencoder.perceptual import load_lpips
from latentdiff.config import DataConfig
from latentdiff.errors import UserError
from latentdiff.evaluation.alignment import evaluate_alignment
from latentdiff.evaluation.conditional import evaluate_class_conditional
from latentdiff.evaluation.restoration import evaluate_superres
from latentdiff.evaluation.sample_quality import evaluate_checkpoint_quality
from latentdiff.ldm import LatentDiffusion
from latentdiff.metrics.clip_score import ClipScorer


def chosen_evaluation(model: LatentDiffusion, quality: bool = False) -> Callable:
    """The evaluation function that fits `model`: sample quality (asked for, or an unconditional
    model), class accuracy, super-resolution scores, or alignment over guidance scales
    (text and layout models)."""
    if quality or (not model.num_classes and model.conditioner is None):
        return evaluate_checkpoint_quality
    if model.num_classes:
        return evaluate_class_conditional
    if model.conditioner.restores:
        return evaluate_superres
    return evaluate_alignment


def evaluate(model: LatentDiffusion, data_cfg: DataConfig, *, quality: bool = False,
             seeds: Sequence[int] = (0,),
             n: int | None = None, guidance_scales: Sequence[float] = (1.0,),
             features: str | None = None,
             inception_weights: str | Path | None = None, resize: str = "clean",
             device: torch.device | str = "cpu",
             lpips_weights: str | Path | None = None, vgg16_weights: str | Path | None = None,
             clip: str | Path | None = None, **sample_options):
    """The report (`.table()`, `.to_dict()`) of `chosen_evaluation(model, quality)`. lpips_weights
    (+ vgg16_weights) add LPIPS to super-resolution scores; `clip` (a local CLIP folder) adds CLIP
    scores to a text model's alignment; given to another evaluation they are an error, raised before
    any work."""
    evaluation = chosen_evaluation(model, quality)
    if lpips_weights and evaluation is not evaluate_superres:
        raise UserError("--lpips-weights scores super-resolution outputs against their originals; "
                        "this evaluation has no paired images (drop it, or evaluate a "
                        "super-resolution model without --quality)")
    if evaluation is evaluate_checkpoint_quality:
        return evaluate_checkpoint_quality(model, data_cfg, features, inception_weights,
                                           resize, device, n, seeds,
                                           guidance_scales, **sample_options)
    if evaluation is evaluate_class_conditional:
        return evaluate_class_conditional(model, data_cfg, seeds, **sample_options)
    if evaluation is evaluate_superres:
        lpips = load_lpips(lpips_weights, vgg16_weights).to(model.device) if lpips_weights else None
        return evaluate_superres(model, data_cfg, seeds, n, lpips, **sample_options)
    scorer = None if clip is None else ClipScorer(clip, device)
    return evaluate_alignment(model, data_cfg, guidance_scales, seeds, n, scorer, **sample_options)
