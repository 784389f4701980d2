"""Generation: validate the request, draw x_T per seed, run a sampler on the denoiser, decode with the codec."""

from collections.abc import Sequence

import torch

from latentdiff.conditioning import Cond
from latentdiff.errors import UserError
from latentdiff.ldm import LatentDiffusion
from latentdiff.samplers import SAMPLERS, sigma_grid
from latentdiff.samplers.noise import per_sample_generators, randn_like


def _class_tensor(model: LatentDiffusion, class_labels: Sequence[int] | None, n: int) -> torch.Tensor | None:
    if model.num_classes is None:
        if class_labels is not None:
            raise UserError("this model is unconditional; drop the class labels (--class)")
        return None
    if class_labels is None:
        raise UserError(f"this model is class-conditional; give class labels 0..{model.num_classes - 1} (--class)")
    labels = torch.as_tensor(list(class_labels), dtype=torch.long)
    if len(labels) != n or labels.min() < 0 or labels.max() >= model.num_classes:
        raise UserError(f"need {n} class labels in 0..{model.num_classes - 1}, got {labels.tolist()[:10]}")
    return labels


@torch.no_grad()
def generate(model: LatentDiffusion, seeds: Sequence[int], class_labels: Sequence[int] | None = None, *,
             sampler: str = "ddim", steps: int = 50, spacing: str = "uniform", batch_size: int = 250,
             **sampler_options) -> torch.Tensor:
    """One image per seed → (N, C, H, W) float in [-1, 1]. Image i depends only on (seeds[i], class_labels[i]),
    not on the batch it was drawn in (one generator per sample). sampler_options go to the sampler (e.g. eta)."""
    if sampler not in SAMPLERS:
        raise UserError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    labels = _class_tensor(model, class_labels, len(seeds))
    sigmas = sigma_grid(model.schedule, steps, spacing).to(model.device)
    denoiser, out = model.denoiser, []
    for start in range(0, len(seeds), batch_size):
        generators = per_sample_generators(list(seeds[start:start + batch_size]))
        x = randn_like(torch.empty(len(generators), *model.latent_shape, device=model.device), generators)
        cond = Cond(class_labels=None if labels is None else labels[start:start + batch_size].to(model.device))
        z = SAMPLERS[sampler](denoiser, x * denoiser.prior_std(sigmas[0]), sigmas, cond=cond, generator=generators,
                              **sampler_options)
        out.append(model.codec.decode(z).cpu())
    return torch.cat(out)


def class_grid_labels(num_classes: int, per_class: int) -> list[int]:
    """Labels for a grid with one row per class: [0]*per_class + [1]*per_class + ..."""
    return [c for c in range(num_classes) for _ in range(per_class)]
