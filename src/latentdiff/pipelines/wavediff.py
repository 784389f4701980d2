"""Images from a WaveDiff model (`wavediff.py`): its T-step reverse chain from x_T ~ N(0, I), then
the decoder."""

from collections.abc import Sequence

import torch

from latentdiff.errors import UserError
from latentdiff.samplers.randomness import per_sample_generators, randn_like
from latentdiff.wavediff import WaveDiff, reverse_chain


@torch.no_grad()
def generate_wavediff(model: WaveDiff, seeds: Sequence[int], *, steps: int | None = None,
                      guidance_scale: float = 1.0, batch_size: int = 250,
                      decode: bool = True) -> torch.Tensor:
    """One image per seed → (N, C, H, W) in [-1, 1] (decode=False: the latents (N, c, h, w)).
    A DDGAN chain samples in exactly the T steps it was trained for (`steps` None or T); it is
    unconditional, so guidance_scale must be 1. Image i depends only on seeds[i]."""
    T = model.schedule.T
    if steps is not None and steps != T:
        raise UserError(f"steps={steps}: this WaveDiff model samples in the {T} steps it was "
                        f"trained for (a GAN chain has no other grid); use steps={T} or train "
                        f"with num_timesteps={steps}")
    if guidance_scale != 1.0:
        raise UserError("a WaveDiff model is unconditional; sample with guidance scale 1")
    out = []
    for start in range(0, len(seeds), batch_size):
        generators = per_sample_generators(list(seeds[start:start + batch_size]))
        like = torch.empty(len(generators), *model.latent_shape, device=model.device)
        x_T = randn_like(like, generators)

        def draws(shape: tuple[int, ...]) -> torch.Tensor:
            return randn_like(torch.empty(shape, device=model.device), generators)

        z = reverse_chain(model.generator, model.schedule, x_T, draws)
        out.append((model.codec.decode(z) if decode else z).cpu())
    return torch.cat(out)
