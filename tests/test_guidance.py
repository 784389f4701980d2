import pytest
import torch

from latentdiff.conditioning import Cond
from latentdiff.denoiser import GuidedDenoiser
from latentdiff.errors import UserError


class CountingDenoiser:
    """D(x; σ, c) = x·(1 + label)/(1 + σ²) with the label from the Cond; counts forward passes."""

    def __init__(self):
        self.calls = 0

    def __call__(self, x, sigma, cond):
        self.calls += 1
        sigma = torch.as_tensor(sigma).expand(x.shape[0]).reshape(-1, 1)
        return x * (1 + cond.class_labels.float().reshape(-1, 1)) / (1 + sigma ** 2)


def test_guidance_combines_cond_and_uncond_in_one_pass():
    base = CountingDenoiser()
    x, sigma = torch.randn(3, 4), torch.tensor(2.0)
    cond = Cond(class_labels=torch.tensor([1, 2, 3]))
    uncond = Cond(class_labels=torch.zeros(3, dtype=torch.long))
    guided = GuidedDenoiser(base, uncond, scale=5.0)
    out = guided(x, sigma, cond)
    assert base.calls == 1
    d_c, d_u = base(x, sigma, cond), base(x, sigma, uncond)
    torch.testing.assert_close(out, d_u + 5.0 * (d_c - d_u))
    assert GuidedDenoiser(base, uncond, scale=1.0)(x, sigma, cond).equal(d_c)


def test_guidance_interval_guides_only_inside_and_skips_the_uncond_pass_outside():
    base = CountingDenoiser()
    x = torch.randn(2, 4)
    cond = Cond(class_labels=torch.tensor([1, 2]))
    uncond = Cond(class_labels=torch.zeros(2, dtype=torch.long))
    guided = GuidedDenoiser(base, uncond, scale=4.0, interval=(0.5, 3.0))
    for sigma, inside in ((0.2, False), (0.5, True), (2.0, True), (3.0, True), (5.0, False)):
        d_c, d_u = base(x, sigma, cond), base(x, sigma, uncond)
        base.calls = 0
        expected = d_u + 4.0 * (d_c - d_u) if inside else d_c
        torch.testing.assert_close(guided(x, torch.tensor(sigma), cond), expected)
        assert base.calls == 1
    per_sample = guided(x, torch.tensor([0.2, 2.0]), cond)  # one sample inside, one outside
    d_c, d_u = base(x, torch.tensor([0.2, 2.0]), cond), base(x, torch.tensor([0.2, 2.0]), uncond)
    torch.testing.assert_close(per_sample, torch.stack([d_c[0], (d_u + 4.0 * (d_c - d_u))[1]]))
    with pytest.raises(UserError, match="interval"):
        GuidedDenoiser(base, uncond, scale=4.0, interval=(3.0, 1.0))


def test_guidance_rescale_matches_the_conditional_eps_std():
    base = CountingDenoiser()
    x, sigma = torch.randn(2, 64), torch.tensor(1.5)
    cond = Cond(class_labels=torch.tensor([3, 4]))
    uncond = Cond(class_labels=torch.zeros(2, dtype=torch.long))
    full = GuidedDenoiser(base, uncond, scale=7.0, rescale=1.0)(x, sigma, cond)
    eps_full, eps_cond = (x - full) / sigma, (x - base(x, sigma, cond)) / sigma
    torch.testing.assert_close(eps_full.std(1), eps_cond.std(1))
    plain = GuidedDenoiser(base, uncond, scale=7.0)(x, sigma, cond)
    half = GuidedDenoiser(base, uncond, scale=7.0, rescale=0.5)(x, sigma, cond)
    torch.testing.assert_close(half, (plain + full) / 2)


def test_cond_cat_batches_every_field():
    from latentdiff.conditioning.tokens import Tokens

    a = Cond(context=torch.ones(1, 2, 3), context_mask=torch.ones(1, 2, dtype=torch.bool),
             tokens=Tokens(torch.ones(1, 2, dtype=torch.long), torch.ones(1, 2, dtype=torch.bool)))
    b = Cond(context=torch.zeros(2, 2, 3), context_mask=torch.zeros(2, 2, dtype=torch.bool),
             tokens=Tokens(torch.zeros(2, 2, dtype=torch.long),
                           torch.zeros(2, 2, dtype=torch.bool)))
    both = a.cat(b)
    assert both.context.shape == (3, 2, 3) and both.tokens.ids.shape == (3, 2) and both.class_labels is None
    with pytest.raises(ValueError, match="field set"):
        a.cat(Cond(context=torch.zeros(1, 2, 3)))


def test_image_guidance_adds_sigma_squared_times_the_guider_gradient():
    """With D(x; σ) = x/(1 + σ²), decode = identity and T = identity, log p = −s/2·‖y − D‖²/n, so
    D̃ = D + σ²·s·(y − D)/(n·(1 + σ²)) exactly; and guidance pulls a sampled image towards the
    target."""
    from latentdiff.denoiser import ImageGuidedDenoiser

    def base(x, sigma, cond=None):
        return x / (1 + torch.as_tensor(sigma).reshape(-1, 1, 1, 1) ** 2)

    x, target, sigma = torch.randn(2, 3, 4, 4), torch.rand(2, 3, 4, 4) * 2 - 1, torch.tensor(0.7)
    guided = ImageGuidedDenoiser(base, lambda z: z, target, scale=5.0)(x, sigma)
    d = base(x, sigma)
    torch.testing.assert_close(guided,
                               d + sigma ** 2 * 5.0 * (target - d) / (48 * (1 + sigma ** 2)))
    assert torch.equal(ImageGuidedDenoiser(base, lambda z: z, target, scale=0.0)(x, sigma), d)


def test_image_guided_generation_follows_a_small_target(tmp_path):
    from conftest import tiny_autoencoder_config, tiny_ldm_config

    from latentdiff.checkpoints import load_latent_diffusion
    from latentdiff.pipelines import generate
    from latentdiff.train.autoencoder import train_autoencoder
    from latentdiff.train.diffusion import train_latent_diffusion

    ae = train_autoencoder(tiny_autoencoder_config(tmp_path / "ae", "train.max_steps=20",
                                                   "train.checkpoint_every=20"))
    model = load_latent_diffusion(train_latent_diffusion(tiny_ldm_config(tmp_path / "ldm", ae, "unet.num_classes=null",
                                                                         "train.max_steps=2")))
    target = torch.zeros(2, 1, 8, 8)
    # dark left half, mid-grey right half, at a quarter of the 32×32 sample's side
    target[:, :, :, :4] = -1.0
    options = {"seeds": [0, 1], "latent_size": (16, 16), "steps": 8}
    plain, guided = generate(model, **options), generate(model, **options,
                                                         image_guide=(target, 2000.0))
    assert guided.shape == (2, 1, 32, 32)

    def distance(images):
        small = torch.nn.functional.interpolate(images, size=(8, 8), mode="bicubic", antialias=True)
        return (small - target).pow(2).mean().item()
    assert distance(guided) < 0.5 * distance(plain)
