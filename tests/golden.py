"""Golden outputs of the bundled model: what sampling and the training loss give at a fixed set of
options.

`tests/data/golden-bundled.safetensors` holds them as written by `python tests/golden.py` at the
commit named in its metadata; `test_golden.py` recomputes them, so a refactor of the denoiser, the
samplers, the conditioning or the loss that changes what a trained model produces fails the suite.
The cases cover every path a sample takes: classifier-free guidance (with rescale and an interval),
a deterministic and a stochastic sampler, a σ grid, a t0-ending grid, img2img with a mask, and a
negative prompt.
"""

import subprocess
import sys
from pathlib import Path

import torch

from latentdiff.checkpoints import load_latent_diffusion
from latentdiff.checkpoints.models import bundled_model

GOLDEN = Path(__file__).resolve().parent / "data" / "golden-bundled.safetensors"
PROMPTS = ["grinning face", "red apple", "", "a dog face"]
SEEDS = [0, 1, 2, 3]


def golden_outputs() -> dict[str, torch.Tensor]:
    """name → tensor: scaled latents z₀ (4, c, 8, 8) of each sampling case, and the per-sample loss
    (4,)."""
    from latentdiff.pipelines import generate

    torch.manual_seed(0)
    model = load_latent_diffusion(bundled_model())
    common = dict(prompts=PROMPTS, decode=False)
    out = {
        "ddim10_cfg3": generate(model, SEEDS, sampler="ddim", steps=10,
                                guidance_scale=3.0, **common),
        "dpmpp2m_karras8_cfg2_rescale": generate(model, SEEDS, sampler="dpmpp_2m",
                                                 steps=8, spacing="karras",
                                                 guidance_scale=2.0,
                                                 guidance_rescale=0.5, **common),
        "euler_ancestral6_interval": generate(model, SEEDS, sampler="euler_ancestral",
                                              steps=6, guidance_scale=4.0,
                                              guidance_interval=(0.5, 5.0), **common),
        "plms8_t0_negative": generate(model, SEEDS, sampler="plms", steps=8,
                                      final="t0", guidance_scale=3.0,
                                      negative_prompts=["face"] * 4, **common),
        "ddpm5_v1": generate(model, SEEDS, sampler="ddpm", steps=5, **common),
    }
    mask = torch.zeros(4, 1, 8, 8)
    mask[:, :, 2:6, 1:7] = 1
    from latentdiff.pipelines.generate import LatentEdit

    edit = LatentEdit(out["ddim10_cfg3"], strength=0.6, mask=mask)
    out["img2img_masked_heun4"] = generate(model, SEEDS, sampler="heun", steps=4,
                                           guidance_scale=2.0, edit=edit,
                                           **common)
    out["loss"] = golden_loss(model)
    return out


def golden_loss(model) -> torch.Tensor:
    """The training loss (paper Sec. 3.2; the network-output MSE of the model's own objective) of the
    bundled model's UNet at fixed z₀, σ, ε and prompts: (4,)."""
    from latentdiff.objectives import denoising_loss

    generator = torch.Generator().manual_seed(7)
    z0 = torch.randn(4, *model.latent_shape, generator=generator)
    noise = torch.randn(4, *model.latent_shape, generator=generator)
    sigma = torch.tensor([0.05, 0.5, 2.0, 20.0])
    cond = model.conditioner.encode(model.conditioner.tokens(PROMPTS))
    with torch.no_grad():
        return denoising_loss(model.denoiser, z0, sigma, noise, cond)


if __name__ == "__main__":
    from safetensors.torch import save_file

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()

    commit, clean = git("rev-parse", "HEAD"), not git("status", "--porcelain")
    torch.set_num_threads(2)
    GOLDEN.parent.mkdir(exist_ok=True)
    save_file({k: v.contiguous() for k, v in golden_outputs().items()}, GOLDEN,
              metadata={"commit": commit, "clean": str(clean),
                        "command": " ".join(["python", *sys.argv])})
    print(f"wrote {GOLDEN} (commit {commit[:7]}, clean={clean})")
