"""Score a text- or layout-conditioned model on the held-out conditions of its dataset, over
guidance scales.

Alignment: how often a generated image matches its own condition under the dataset's evaluator —
- shapes: the analytic checker (`metrics/shapes.py`): caption-match accuracy for text models, mean
  box IoU for layout models;
- other labelled data (emoji): the classifier evaluator's accuracy at predicting the label of the
  prompt's image (for emoji, the Unicode subgroup of the emoji the prompt names).
Each number comes with two baselines under the same evaluator: the real held-out images with their
own conditions (the ceiling) and the same images shuffled against the conditions (chance for this
evaluator and label prior). Fréchet distance: in the classifier's features, generated vs the
training split, beside held-out vs training.
"""

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from latentdiff.conditioning.layout import LayoutConditioner
from latentdiff.conditioning.text import TextConditioner
from latentdiff.config import DataConfig
from latentdiff.data import ImageData, load_dataset, split_holdout, to_model_range, to_uint8
from latentdiff.data.shapes import scene_of
from latentdiff.errors import UserError
from latentdiff.ldm import LatentDiffusion
from latentdiff.metrics.classifier import classify, load_or_train_classifier
from latentdiff.metrics.frechet import FeatureStats, frechet_distance
from latentdiff.metrics.shapes import score_shapes
from latentdiff.pipelines import generate
from latentdiff.pipelines.vq_diffusion import generate_vq
from latentdiff.vq_diffusion import VQDiffusion


@dataclass
class GuidanceRow:
    guidance_scale: float
    alignment: list[float]  # one per sampling seed
    fd: list[float]  # one per sampling seed
    # one per seed, when a CLIP model is given
    clip_score: list[float] = field(default_factory=list)


@dataclass
class AlignmentReport:
    metric: str  # what alignment measures
    n: int  # held-out conditions = samples per seed
    real: float  # alignment of the real held-out images (the evaluator's ceiling)
    shuffled: float  # real images against shuffled conditions (chance)
    fd_baseline: float  # held-out real vs training split, same n
    rows: list[GuidanceRow]

    def table(self) -> str:
        header = (f"{self.metric}, n = {self.n} held-out conditions per seed; real images "
                  f"{self.real:.3f}, shuffled real images (chance) {self.shuffled:.3f}; Fréchet "
                  f"distance real-vs-real {self.fd_baseline:.2f}")
        clip = any(row.clip_score for row in self.rows)
        lines = [header,
                 "| guidance s | alignment (mean ± sd over seeds) | × chance | Fréchet distance |"
                 + (" CLIP score |" if clip else ""),
                 "|---|---|---|---|" + ("---|" if clip else "")]
        for row in self.rows:
            a, fd, c = np.array(row.alignment), np.array(row.fd), np.array(row.clip_score)
            lines.append(f"| {row.guidance_scale:g} | {a.mean():.3f} ± {a.std():.3f} | "
                         f"{a.mean() / max(self.shuffled, 1e-9):.1f} | {fd.mean():.2f} ± "
                         f"{fd.std():.2f} |"
                         + (f" {c.mean():.2f} ± {c.std():.2f} |" if clip else ""))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "AlignmentReport":
        return cls(**{**data, "rows": [GuidanceRow(**row) for row in data["rows"]]})


def _alignment_scorer(text: bool, data_cfg: DataConfig, held: ImageData, classifier):
    """(metric name, score(images uint8 (N, C, H, W), condition rows) → float) of a text
    (else layout) model."""
    if data_cfg.dataset == "shapes":
        scenes = [scene_of(c, b) for c, b in zip(held.captions, held.boxes)]
        key = "caption_accuracy" if text else "box_iou"

        def score(images: torch.Tensor, rows: Sequence[int]) -> float:
            return score_shapes([scenes[i] for i in rows], images)[key]
        return ("shapes checker: "
                "caption-match accuracy" if text else "shapes checker: mean box IoU"), score

    def score(images: torch.Tensor, rows: Sequence[int]) -> float:
        predicted, _ = classify(classifier, to_model_range(images))
        return float((predicted == held.labels[list(rows)]).float().mean())
    return f"classifier evaluator: accuracy on the prompt's label ({len(held.class_names)} classes)", score


def evaluate_alignment(model: LatentDiffusion | VQDiffusion, data_cfg: DataConfig,
                       guidance_scales: Sequence[float] = (1, 2, 4, 8),
                       seeds: Sequence[int] = (0,), n: int | None = None, clip=None,
                       **sample_options) -> AlignmentReport:
    """Generate one image per held-out condition (the first n) for each guidance scale and sampling
    seed and score them (sample_options → `generate`, e.g. steps, sampler; for a VQ-Diffusion
    model → `generate_vq`: steps). Guidance 0 is the unconditional model. `clip`: a `ClipScorer`,
    which adds the mean CLIP score of text models' samples against their prompts."""
    conditioner = model.conditioner
    if not isinstance(conditioner, (TextConditioner, LayoutConditioner)):
        raise UserError(f"alignment needs a text or layout model; this one is conditioned on "
                        f"{conditioner.kind if conditioner else 'none'}")
    text = isinstance(conditioner, TextConditioner)
    train, held = split_holdout(load_dataset(data_cfg), data_cfg.holdout, data_cfg.split_seed)
    if not held.captions:
        raise UserError(f"data.dataset={data_cfg.dataset} has no captions or boxes to condition on")
    classifier, _ = load_or_train_classifier(data_cfg, split=(train, held))
    held = held.sample(n or len(held))
    metric, score = _alignment_scorer(text, data_cfg, held, classifier)
    reference = FeatureStats.of(classify(classifier, to_model_range(train.images))[1])

    def fd(images: torch.Tensor) -> float:
        return frechet_distance(FeatureStats.of(classify(classifier, to_model_range(images))[1]),
                                reference)

    rows = list(range(len(held)))
    shuffled = torch.randperm(len(held), generator=torch.Generator().manual_seed(0)).tolist()
    conditions = conditioner.training_inputs(held, torch.arange(len(held)))
    option = {conditioner.input_name: conditions}
    report = AlignmentReport(metric, len(held), score(held.images, rows),
                             score(held.images[shuffled], rows),
                             fd(held.images), [])
    for s in guidance_scales:
        row = GuidanceRow(float(s), [], [])
        for seed in seeds:
            draw = generate_vq if isinstance(model, VQDiffusion) else generate
            images = to_uint8(draw(model, [seed * len(held) + i for i in rows],
                                   guidance_scale=s, **option, **sample_options))
            row.alignment.append(score(images, rows))
            row.fd.append(fd(images))
            if clip is not None and text:
                row.clip_score.append(float(clip(images, conditions).mean()))
        report.rows.append(row)
    return report
