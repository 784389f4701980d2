"""Semantic diffusion guidance (Liu et al. 2023, "More Control for Free!"): steer any model with a
joint image-text embedding E, by language, image content or image style, alone or together.

On the denoised estimate x̂₀ = D(x; σ) decoded to an image I = dec(x̂₀) (the guide is applied to the
clean estimate, so E needs no training on noisy images):

    g(x̂₀) = s_text·cos(E(I), E_T(text)) + s_content·cos(E(I), E(I_c))
            − s_style·mean_l ‖G_l(I) − G_l(I_s)‖² / ‖G_l(I_s)‖²,

with G_l the Gram matrix F_l F_lᵀ / N_l of the image network's feature map l (Gatys et al.'s style
statistics). E: a CLIP model from a local folder (language, content, style), or the project's
evaluator network (content and style; it has no text tower). Two steps:

- "x0" (the default): D̃ = x̂₀ + ∇_x̂₀ g(x̂₀), the same move of the clean estimate at every σ, without
  a gradient through the network;
- "tilt": D̃ = x̂₀ + σ²·∇_x g(D(x; σ)), the exact denoiser of p(x; σ)·exp(g(D(x; σ))). Its move
  scales with σ²·∂D/∂x, so it is uneven over the steps (a flow schedule's first σ is about 4,500
  at 20 steps), and it needs a gradient through the network (docs/guidance.md measures both).
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from latentdiff.conditioning import Cond
from latentdiff.denoiser import (DenoiserWrapper, check_guidance, in_interval, per_sample_sigma,
                                 tilt)
from latentdiff.errors import UserError
from latentdiff.metrics.clip_score import CLIP_MEAN, CLIP_STD, ClipScorer, embeds
from latentdiff.metrics.features import as_rgb
from latentdiff.preconditioning import append_dims


def gram(features: torch.Tensor) -> torch.Tensor:
    """(B, C, N) features → (B, C, C) Gram matrices F·Fᵀ / N."""
    return features @ features.transpose(1, 2) / features.shape[-1]


class ClipEmbedder:
    """A `transformers` CLIPModel folder: images in [-1, 1] → embeddings (differentiably: bicubic
    resize of the short side, centre crop, CLIP's normalisation); texts → embeddings; style
    features: the vision tower's token maps at a few depths."""

    def __init__(self, folder, device="cpu"):
        scorer = ClipScorer(folder, device)
        self.model = scorer.model.requires_grad_(False)
        self.tokenizer, self.size = scorer.tokenizer, scorer.size
        self.device = device

    def _pixels(self, images: torch.Tensor) -> torch.Tensor:
        images = (as_rgb(images).float() + 1) / 2
        h, w = images.shape[-2:]
        scale = self.size / min(h, w)
        size = (max(self.size, round(h * scale)), max(self.size, round(w * scale)))
        images = F.interpolate(images, size=size, mode="bicubic", antialias=True, align_corners=False)
        top, left = (size[0] - self.size) // 2, (size[1] - self.size) // 2
        images = images[..., top:top + self.size, left:left + self.size]
        mean = torch.tensor(CLIP_MEAN, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=images.device).view(1, 3, 1, 1)
        return (images - mean) / std

    def image(self, images: torch.Tensor) -> torch.Tensor:
        return embeds(self.model.get_image_features(pixel_values=self._pixels(images)))

    def text(self, prompts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(list(prompts), padding=True, truncation=True, return_tensors="pt")
        return embeds(self.model.get_text_features(**{k: v.to(self.device)
                                                       for k, v in tokens.items()}))

    def style(self, images: torch.Tensor) -> list[torch.Tensor]:
        hidden = self.model.vision_model(pixel_values=self._pixels(images),
                                         output_hidden_states=True).hidden_states
        layers = hidden[1::max(1, len(hidden) // 4)]
        return [h.transpose(1, 2) for h in layers]  # (B, C, tokens)


class EvaluatorEmbedder:
    """The project's evaluator network (`metrics/classifier.py`): its penultimate features as the
    embedding, the activations after each ReLU as style features; no text."""

    def __init__(self, classifier):
        self.classifier = classifier.eval().requires_grad_(False)

    def image(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(images.float())

    def text(self, prompts: list[str]) -> torch.Tensor:
        raise UserError("language guidance needs a joint image-text model: give a CLIP folder "
                        "(--clip)")

    def style(self, images: torch.Tensor) -> list[torch.Tensor]:
        out, h = [], images.float()
        for layer in self.classifier.body:
            h = layer(h)
            if isinstance(layer, torch.nn.ReLU):
                out.append(h.flatten(2))
        return out


@dataclass(frozen=True)
class SemanticTargets:
    """text: a prompt; content: an image (C, h, w) in [-1, 1] whose embedding the samples should
    share, or one per sample (N, C, h, w); style: an image whose feature statistics they should
    share; each with its scale. step: "x0" or "tilt" (module docstring)."""

    text: str | None = None
    text_scale: float = 0.0
    content: torch.Tensor | None = None
    content_scale: float = 0.0
    style: torch.Tensor | None = None
    style_scale: float = 0.0
    step: str = "x0"


class SemanticGuidedDenoiser(DenoiserWrapper):
    """D̃(x; σ) = x̂₀ + ∇_x̂₀ g(dec(x̂₀)) (step "x0") or x̂₀ + σ²·∇_x g(dec(D(x; σ))) ("tilt"),
    x̂₀ = D(x; σ), g the semantic objective of `targets` under `embedder` (module docstring);
    `decode` maps latents to images in [-1, 1]. With `interval` (σ_lo, σ_hi), only for σ inside
    it."""

    def __init__(self, denoiser, decode, embedder, targets: SemanticTargets,
                 interval: tuple[float, float] | None = None):
        if min(targets.text_scale, targets.content_scale, targets.style_scale) < 0:
            raise UserError("semantic guidance scales must be ≥ 0")
        if targets.step not in ("x0", "tilt"):
            raise UserError(f"semantic guidance step {targets.step!r} is unknown; use x0 or tilt")
        check_guidance(1.0, 0.0, interval)
        self.denoiser, self.decode, self.embedder, self.targets = denoiser, decode, embedder, targets
        self.interval = interval
        with torch.no_grad():
            t = targets
            self.text = None if t.text is None else F.normalize(embedder.text([t.text]), dim=-1)
            self.content = (None if t.content is None else F.normalize(
                embedder.image(t.content if t.content.ndim == 4 else t.content[None]), dim=-1))
            self.style = None if t.style is None else [gram(f) for f in embedder.style(t.style[None])]

    def objective(self, images: torch.Tensor) -> torch.Tensor:
        """g per image (B,)."""
        t, g = self.targets, torch.zeros(len(images), device=images.device)
        if self.text is not None or self.content is not None:
            embedding = F.normalize(self.embedder.image(images), dim=-1)
            if self.text is not None:
                g = g + t.text_scale * (embedding * self.text.to(embedding)).sum(-1)
            if self.content is not None:
                g = g + t.content_scale * (embedding * self.content.to(embedding)).sum(-1)
        if self.style is not None:
            losses = [(gram(f) - s.to(f)).pow(2).flatten(1).sum(1) / s.pow(2).sum()
                      for f, s in zip(self.embedder.style(images), self.style)]
            g = g - t.style_scale * torch.stack(losses).mean(0)
        return g

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor,
                 cond: Cond | None = None) -> torch.Tensor:
        sigma = per_sample_sigma(sigma, x)
        active = in_interval(sigma, self.interval)
        if not active.any():
            return self.denoiser(x, sigma, cond)
        denoised, push = self.step(x, sigma, cond)
        return denoised + append_dims(active, x) * push

    def step(self, x: torch.Tensor, sigma: torch.Tensor,
             cond: Cond | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(x̂₀, the targets' step's move of it) for every row."""
        if self.targets.step == "tilt":
            return tilt(self.denoiser, x, sigma, cond,
                        lambda denoised: self.objective(self.decode(denoised)))
        denoised = self.denoiser(x, sigma, cond).detach()
        with torch.enable_grad():
            x0 = denoised.clone().requires_grad_(True)
            grad = torch.autograd.grad(self.objective(self.decode(x0)).sum(), x0)[0]
        return denoised, grad
