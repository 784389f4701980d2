"""Images from a VQ-Diffusion model (`vq_diffusion.py`): the reverse process over the code grid
from the prior q(x_T), with classifier-free guidance on p_θ(x̃_0 | x_t), then the VQ decoder."""

import dataclasses
from collections.abc import Sequence

import torch

from latentdiff.conditioning import Cond
from latentdiff.errors import UserError
from latentdiff.pipelines.generate import null_condition, sample_conditions
from latentdiff.samplers.randomness import per_sample_generators
from latentdiff.vq_diffusion import VQDiffusion, guided_log_probs, prior_sample, sample_codes


def generate_vq(model: VQDiffusion, seeds: Sequence[int],
                class_labels: Sequence[int] | None = None, *,
                prompts: Sequence[str] | None = None, layouts: Sequence[list] | None = None,
                steps: int = 50, guidance_scale: float = 1.0, batch_size: int = 250,
                decode: bool = True) -> torch.Tensor:
    """One image per seed → (N, C, H, W) in [-1, 1] (decode=False: the codes (N, h, w)).

    `steps` reverse steps evenly spaced over the model's T (fewer than T skips transitions in
    closed form); guidance_scale s ≠ 1: log p̂(x̃_0) = log p(x̃_0 | ∅) + s·(log p(x̃_0 | y) −
    log p(x̃_0 | ∅)). Image i depends only on seeds[i] and its own condition."""
    T = model.schedule.T
    if not 1 <= steps <= T:
        raise UserError(f"steps={steps}: this model's process has T = {T}; use 1 … {T} steps")
    if guidance_scale < 0:
        raise UserError(f"guidance scale {guidance_scale} must be ≥ 0")
    if guidance_scale != 1.0 and not model.trained_with_null:
        raise UserError("this model was trained without condition dropout (conditioning.drop_prob "
                        "= 0), so it has no unconditional mode; sample with guidance scale 1")
    n, (h, w) = len(seeds), model.code_grid
    labels, token_inputs = sample_conditions(model, n, class_labels, prompts, layouts)
    device, out = model.device, []

    def log_probs(x: torch.Tensor, t: torch.Tensor, c: Cond) -> torch.Tensor:
        """log p_θ(x̃_0 | x_t, c): (B, K, N)."""
        logits = model.transformer(x.view(-1, h, w), t, **c.network_kwargs())
        return torch.log_softmax(logits.flatten(2).float(), dim=1)

    for start in range(0, n, batch_size):
        rows = slice(start, start + batch_size)
        generators = per_sample_generators(list(seeds[rows]))
        cond = Cond(class_labels=None if labels is None else labels[rows])
        if token_inputs is not None:
            cond = dataclasses.replace(model.conditioner.condition(token_inputs[rows], device),
                                       class_labels=cond.class_labels)
        cond = cond.to(device)
        uncond = (null_condition(model, cond, None, len(generators)).to(device)
                  if guidance_scale != 1.0 else None)

        def predict(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            if uncond is None:
                return log_probs(x, t, cond)
            both = log_probs(torch.cat([x, x]), torch.cat([t, t]), cond.cat(uncond))
            return guided_log_probs(*both.chunk(2), guidance_scale)  # one pass for both branches

        with torch.no_grad():
            x_T = prior_sample(model.schedule, (len(generators), h * w), generators).to(device)
            codes = sample_codes(predict, model.schedule, x_T, steps, generators).view(-1, h, w)
            out.append((model.decode(codes) if decode else codes).cpu())
    return torch.cat(out)
