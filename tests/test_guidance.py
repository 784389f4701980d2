import pytest
import torch

from latentdiff.conditioning import Cond
from latentdiff.denoiser import GuidedDenoiser


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
    cond, uncond = Cond(class_labels=torch.tensor([1, 2, 3])), Cond(class_labels=torch.zeros(3, dtype=torch.long))
    guided = GuidedDenoiser(base, uncond, scale=5.0)
    out = guided(x, sigma, cond)
    assert base.calls == 1
    d_c, d_u = base(x, sigma, cond), base(x, sigma, uncond)
    torch.testing.assert_close(out, d_u + 5.0 * (d_c - d_u))
    assert GuidedDenoiser(base, uncond, scale=1.0)(x, sigma, cond).equal(d_c)


def test_guidance_rescale_matches_the_conditional_eps_std():
    base = CountingDenoiser()
    x, sigma = torch.randn(2, 64), torch.tensor(1.5)
    cond, uncond = Cond(class_labels=torch.tensor([3, 4])), Cond(class_labels=torch.zeros(2, dtype=torch.long))
    full = GuidedDenoiser(base, uncond, scale=7.0, rescale=1.0)(x, sigma, cond)
    eps_full, eps_cond = (x - full) / sigma, (x - base(x, sigma, cond)) / sigma
    torch.testing.assert_close(eps_full.std(1), eps_cond.std(1))
    plain = GuidedDenoiser(base, uncond, scale=7.0)(x, sigma, cond)
    half = GuidedDenoiser(base, uncond, scale=7.0, rescale=0.5)(x, sigma, cond)
    torch.testing.assert_close(half, (plain + full) / 2)


def test_cond_cat_batches_every_field():
    from latentdiff.conditioning.text import Tokens

    a = Cond(context=torch.ones(1, 2, 3), context_mask=torch.ones(1, 2, dtype=torch.bool),
             tokens=Tokens(torch.ones(1, 2, dtype=torch.long), torch.ones(1, 2, dtype=torch.bool)))
    b = Cond(context=torch.zeros(2, 2, 3), context_mask=torch.zeros(2, 2, dtype=torch.bool),
             tokens=Tokens(torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 2, dtype=torch.bool)))
    both = a.cat(b)
    assert both.context.shape == (3, 2, 3) and both.tokens.ids.shape == (3, 2) and both.class_labels is None
    with pytest.raises(ValueError, match="field set"):
        a.cat(Cond(context=torch.zeros(1, 2, 3)))
