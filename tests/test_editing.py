"""img2img (SDEdit) and inpainting by masked blending, on the bundled emoji model
(any model works)."""

import pytest
import torch

from latentdiff.checkpoints import load_latent_diffusion
from latentdiff.checkpoints.models import BUNDLED_MODEL
from latentdiff.denoiser import MaskedDenoiser
from latentdiff.errors import UserError
from latentdiff.pipelines import conditional
from latentdiff.samplers import SAMPLERS


@pytest.fixture(scope="module")
def model():
    return load_latent_diffusion(BUNDLED_MODEL)


def heart() -> torch.Tensor:
    image = torch.full((3, 32, 32), 255, dtype=torch.uint8)
    image[0, 8:26, 6:26], image[1:, 8:26, 6:26] = 220, 40
    return image


def test_blended_inpainting_keeps_every_known_pixel_and_fills_the_hole(model):
    mask = torch.zeros(32, 32)
    mask[:, 16:] = 1
    out = conditional.inpaint(model, heart(), mask, seeds=[0, 1],
                              prompts=["red heart"] * 2, steps=8)
    assert out.shape == (2, 3, 32, 32) and out.dtype == torch.uint8
    assert torch.equal(out[:, :, :, :16], heart()[None, :, :, :16].expand(2, -1, -1, -1))
    assert not torch.equal(out[0, :, :, 16:], out[1, :, :, 16:])  # the hole is sampled, per seed


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp_2m", "unipc", "heun"])
def test_masked_denoiser_ends_on_the_known_latent(sampler):
    known, mask = torch.randn(2, 4, 4, 4, dtype=torch.float64), torch.zeros(2, 1, 4, 4, dtype=torch.float64)
    mask[..., :2] = 1
    denoiser = MaskedDenoiser(lambda x, sigma, cond=None: 0.5 * x / (1 + sigma ** 2), known, mask)
    sigmas = torch.tensor([20.0, 5.0, 1.0, 0.2, 0.0], dtype=torch.float64)
    x = known + 20.0 * torch.randn_like(known)
    out = SAMPLERS[sampler].function(denoiser, x, sigmas)
    torch.testing.assert_close(out[..., 2:], known[..., 2:])


def test_img2img_runs_the_strength_share_of_the_steps_and_stays_near_the_input(model):
    calls = []
    light = conditional.img2img(model, heart(), seeds=[0], strength=0.2,
                                prompts=["red heart"], steps=20,
                                callback=calls.append)
    assert len(calls) == 4  # 20 % of 20 steps
    full = conditional.img2img(model, heart(), seeds=[0], strength=1.0,
                               prompts=["red heart"], steps=20)
    distance = {name: (im[0].float() - heart().float()).abs().mean().item() for name, im in
                (("light", light), ("full", full))}
    assert distance["light"] < distance["full"], distance
    with pytest.raises(UserError, match="strength"):
        conditional.img2img(model, heart(), seeds=[0], strength=0.0, prompts=["x"])
    with pytest.raises(UserError, match="multiples of 8"):
        conditional.img2img(model, heart()[:, :30, :30], seeds=[0], prompts=["x"])
