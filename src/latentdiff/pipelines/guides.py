"""The guidance beyond classifier-free guidance that `generate` applies (the wrappers of
`guidance.py`), with the checks that run before any sampling."""

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from latentdiff.conditioning import Cond
from latentdiff.metrics.features import state_digest
from latentdiff.errors import UserError
from latentdiff.guidance import AutoGuidedDenoiser, ClassifierGuidedDenoiser, PriorDenoiser
from latentdiff.ldm import LatentDiffusion


@dataclass(frozen=True)
class Guides:
    """classifier: a `NoiseClassifier` of the model's latent space, pushing image i towards class
    `classes[i]` with `classifier_scale` (entropy-aware: EDS's per-sample scale); autoguide: a
    weaker model of the same latent space (fewer parameters or steps) that replaces the
    unconditional branch of guidance, the guidance scale being its s; prior: an unconditional model
    of the same latent space mixed in with `prior_weight` w ≤ 1 (super-resolution, inpainting; w < 0
    guides away from it: `guidance.PriorDenoiser`)."""

    classifier: object = None
    classes: Sequence[int] | None = None
    classifier_scale: float = 1.0
    entropy_aware: bool = False
    autoguide: LatentDiffusion | None = None
    prior: LatentDiffusion | None = None
    prior_weight: float = -0.5
    semantic: object = None  # SemanticTargets (semantic_guidance.py)
    embedder: object = None  # its image(-text) network: ClipEmbedder or EvaluatorEmbedder
    files: dict = dataclasses.field(default_factory=dict)  # {"classifier": path, ...}, recorded

    @property
    def active(self) -> bool:
        """Whether any guide is set (a classifier, autoguidance, a prior or semantic targets)."""
        return any(g is not None for g in (self.classifier, self.autoguide, self.prior,
                                           self.semantic))

    def record(self) -> dict | None:
        """What a PNG's parameters keep of these guides: each model's file name and hash, and the
        settings; None when there are none."""
        from latentdiff.parameters import model_hash

        used = {"classifier": self.classifier, "autoguide": self.autoguide, "prior": self.prior}
        out = {}
        for name, model in used.items():
            if model is None:
                continue
            path = self.files.get(name)
            out[name] = Path(path).stem if path else "(in memory)"
            if path:
                out[f"{name}_hash"] = model_hash(path)
        if self.classifier is not None:
            out.update(classifier_scale=self.classifier_scale, entropy_aware=self.entropy_aware)
        if self.prior is not None:
            out["prior_weight"] = self.prior_weight
        if self.semantic is not None:
            t = self.semantic
            out["semantic"] = {"text": t.text, "text_scale": t.text_scale,
                               "content": self.files.get("content"),
                               "content_scale": t.content_scale,
                               "style": self.files.get("style"), "style_scale": t.style_scale,
                               "step": t.step,
                               "embedder": self.files.get("clip", "evaluator")}
        return out or None


def _same_latent_space(model: LatentDiffusion, other: LatentDiffusion, what: str) -> None:
    if (other.codec.stats != model.codec.stats
            or state_digest(other.codec.autoencoder) != state_digest(model.codec.autoencoder)):
        raise UserError(f"the {what} model has another first stage or latent normalisation than "
                        "this model; give one trained on the same autoencoder")


def check_guides(model: LatentDiffusion, guides: Guides, n: int) -> None:
    """One-line errors, before any work, for guides this model cannot take."""
    if guides.classifier is not None:
        k = guides.classifier.net.num_classes
        classes = [] if guides.classes is None else list(guides.classes)
        if len(classes) != n or min(classes, default=0) < 0 or max(classes, default=0) >= k:
            raise UserError(f"classifier guidance needs one class in 0..{k - 1} per image "
                            f"(--class); got {classes[:10]}")
        if guides.classifier_scale < 0:
            raise UserError(f"classifier scale {guides.classifier_scale} must be ≥ 0")
    if guides.autoguide is not None:
        _same_latent_space(model, guides.autoguide, "autoguidance")
        kind = lambda m: (m.conditioner.kind if m.conditioner else None, m.num_classes)  # noqa: E731
        if kind(guides.autoguide) != kind(model):
            raise UserError("the autoguidance model is conditioned differently from this model; "
                            "give a smaller or less-trained model of the same kind")
    if guides.prior is not None:
        _same_latent_space(model, guides.prior, "prior")
        if guides.prior.conditioner is not None or guides.prior.num_classes:
            raise UserError("the prior must be an unconditional model (no conditioning)")
        if not guides.prior_weight <= 1.0:
            raise UserError(f"prior weight {guides.prior_weight} must be ≤ 1 (1: the prior "
                            "alone; below 0: guidance away from it)")


def autoguided(guides: Guides, denoiser, cond: Cond, token_inputs: list | None, scale: float,
               rescale: float, interval: tuple[float, float] | None) -> AutoGuidedDenoiser:
    """Guidance away from the weak model given the same condition, encoded by its own conditioner."""
    weak = guides.autoguide
    weak_cond = cond
    if token_inputs is not None:
        weak_cond = dataclasses.replace(weak.conditioner.condition(token_inputs, weak.device),
                                        class_labels=cond.class_labels, concat=cond.concat)
    return AutoGuidedDenoiser(denoiser, weak.denoiser, weak_cond.to(weak.device), scale, rescale,
                              interval)


def with_guides(guides: Guides, model: LatentDiffusion, denoiser, rows: slice,
                interval: tuple[float, float] | None):
    """`denoiser` with classifier guidance, semantic guidance and the unconditional prior, where
    asked."""
    device = model.device
    if guides.semantic is not None:
        from latentdiff.semantic_guidance import SemanticGuidedDenoiser

        targets = guides.semantic
        if targets.content is not None and targets.content.ndim == 4:  # one target per image
            targets = dataclasses.replace(targets, content=targets.content[rows])
        denoiser = SemanticGuidedDenoiser(denoiser, model.codec.decode, guides.embedder, targets,
                                          interval)
    if guides.classifier is not None and guides.classifier_scale > 0:
        labels = torch.as_tensor(list(guides.classes[rows]), dtype=torch.long, device=device)
        denoiser = ClassifierGuidedDenoiser(denoiser, guides.classifier, labels,
                                            guides.classifier_scale, guides.entropy_aware, interval)
    if guides.prior is not None and guides.prior_weight != 0:
        denoiser = PriorDenoiser(denoiser, guides.prior.denoiser, guides.prior_weight, Cond(),
                                 interval)
    return denoiser
