"""The guidance wrappers on an analytic case: a 1-D mixture of two Gaussians whose components are
the classes, so that every noisy marginal, class posterior and guided score is known exactly.

x₀ | y=k ~ N(μ_k, s_k²), p(y=k) = w_k; at noise σ: p(x | k) = N(μ_k, s_k² + σ²), p(k | x) ∝ w_k·p(x | k),
and any guided denoiser must equal x + σ²·(the guided score), the score computed here by autograd of
the analytic log densities.
"""

import math

import pytest
import torch
from mixture import MEANS, STDS, WEIGHTS, mixture_denoiser

from latentdiff.conditioning import Cond
from latentdiff.guidance import AutoGuidedDenoiser, ClassifierGuidedDenoiser, PriorDenoiser

SIGMAS = (0.05, 0.4, 1.5, 6.0)


def log_joint(x: torch.Tensor, sigma: torch.Tensor, stds=STDS) -> torch.Tensor:
    """log w_k + log N(x; μ_k, s_k² + σ²), (B, K) for x (B, 1), σ (B,)."""
    w, mu, s = (torch.tensor(v, dtype=torch.float64) for v in (WEIGHTS, MEANS, stds))
    var = s ** 2 + sigma.double()[:, None] ** 2
    return w.log() - 0.5 * torch.log(2 * math.pi * var) - (x - mu) ** 2 / (2 * var)


def log_marginal(x, sigma, stds=STDS) -> torch.Tensor:
    return torch.logsumexp(log_joint(x, sigma, stds), -1)


def classifier(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The exact class posterior log p(k | x, σ), (B, K)."""
    return torch.log_softmax(log_joint(x, sigma), -1)


def grad(f, x: torch.Tensor) -> torch.Tensor:
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        return torch.autograd.grad(f(x).sum(), x)[0]


def class_denoiser(k: int):
    """D(x; σ | y=k) = μ_k + s_k²/(s_k² + σ²)·(x − μ_k)."""
    def denoise(x, sigma, cond=None):
        var = STDS[k] ** 2 + torch.as_tensor(sigma, dtype=x.dtype).view(-1, 1) ** 2
        return MEANS[k] + STDS[k] ** 2 / var * (x - MEANS[k])
    return denoise


def unconditional(x, sigma, cond=None):
    return mixture_denoiser(x, torch.as_tensor(sigma, dtype=x.dtype).view(-1, 1)[:, :1].squeeze(1))


def points(sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.linspace(-3, 3, 25, dtype=torch.float64).view(-1, 1)
    return x, torch.full((len(x),), sigma, dtype=torch.float64)


@pytest.mark.parametrize("sigma", SIGMAS)
def test_classifier_guidance_at_scale_one_is_the_class_conditional_denoiser(sigma):
    x, s = points(sigma)
    for k in range(2):
        labels = torch.full((len(x),), k)
        guided = ClassifierGuidedDenoiser(unconditional, classifier, labels, 1.0)
        torch.testing.assert_close(guided(x, s), class_denoiser(k)(x, s), rtol=0, atol=1e-6)


@pytest.mark.parametrize("sigma", SIGMAS)
def test_classifier_guidance_scales_the_posterior_score_plain_and_entropy_aware(sigma):
    x, s = points(sigma)
    labels = torch.zeros(len(x), dtype=torch.long)
    score = grad(lambda v: log_marginal(v, s), x)
    posterior = grad(lambda v: classifier(v, s)[:, 0], x)
    log_p = classifier(x, s)
    entropy = (-(log_p.exp() * log_p).sum(-1, keepdim=True)).clamp_min(1e-6 * math.log(2))
    for aware, factor in ((False, 3.0), (True, 3.0 * math.log(2) / entropy)):
        guided = ClassifierGuidedDenoiser(unconditional, classifier, labels, 3.0, entropy_aware=aware)
        expected = x + sigma ** 2 * (score + factor * posterior)
        # rtol: σ is float32 in the wrappers, and log K / H reaches 10⁶ where p(k | x) ≈ 1
        torch.testing.assert_close(guided(x, s), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sigma", SIGMAS)
def test_autoguidance_extrapolates_away_from_the_weak_model(sigma):
    """The weak model: the same mixture with wider components (a worse fit of the data)."""
    x, s = points(sigma)
    wide = tuple(1.6 * v for v in STDS)

    def weak(v, sig, cond=None):
        return v + sig.view(-1, 1) ** 2 * grad(lambda u: log_marginal(u, sig, wide), v)

    guided = AutoGuidedDenoiser(unconditional, weak, Cond(), 2.5)
    score = grad(lambda v: log_marginal(v, s), x)
    weak_score = grad(lambda v: log_marginal(v, s, wide), x)
    expected = x + sigma ** 2 * (weak_score + 2.5 * (score - weak_score))  # ∝ p^s / p_w^(s−1)
    torch.testing.assert_close(guided(x, s), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("weight", [0.3, -1.5])
@pytest.mark.parametrize("sigma", SIGMAS)
def test_the_unconditional_prior_mixes_the_two_scores(sigma, weight):
    """w = 0.3: towards the prior, p_c^0.7·p_u^0.3; w = −1.5: away from it, p_c^2.5·p_u^−1.5 (the
    guided score of classifier-free guidance at s = 2.5 with the prior as unconditional branch)."""
    x, s = points(sigma)
    prior = PriorDenoiser(class_denoiser(0), unconditional, weight)
    conditional = grad(lambda v: log_joint(v, s)[:, 0], x)  # ∇ log p(x | y=0)
    marginal = grad(lambda v: log_marginal(v, s), x)
    expected = x + sigma ** 2 * ((1 - weight) * conditional + weight * marginal)
    torch.testing.assert_close(prior(x, s), expected, rtol=0, atol=1e-5)


def test_outside_the_sigma_interval_every_wrapper_is_the_plain_denoiser():
    x, s = points(1.5)
    labels = torch.zeros(len(x), dtype=torch.long)
    wrappers = [ClassifierGuidedDenoiser(unconditional, classifier, labels, 4.0, interval=(2.0, 9.0)),
                AutoGuidedDenoiser(unconditional, class_denoiser(1), Cond(), 4.0, interval=(2.0, 9.0)),
                PriorDenoiser(unconditional, class_denoiser(1), 0.5, interval=(2.0, 9.0)),
                semantic_guided(interval=(2.0, 9.0))]
    mixed = torch.where(torch.arange(len(s)) % 2 == 0, s, torch.full_like(s, 3.0))
    for wrapper in wrappers:
        torch.testing.assert_close(wrapper(x, s), unconditional(x, s), rtol=0, atol=0)
        inside = wrapper(x, torch.full_like(s, 3.0))
        assert not torch.allclose(inside, unconditional(x, torch.full_like(s, 3.0)))
        # a batch with σ on both sides: each row as if it were alone
        expected = torch.where((torch.arange(len(s)) % 2 == 0)[:, None], unconditional(x, s), inside)
        torch.testing.assert_close(wrapper(x, mixed), expected, rtol=0, atol=1e-12)


def semantic_guided(interval=None):
    """Content guidance of the 1-D mixture towards the point 1 under the embedding (x, x², 1)."""
    from latentdiff.semantic_guidance import SemanticGuidedDenoiser, SemanticTargets

    class Polynomial:
        def image(self, images):
            return torch.cat([images, images ** 2, torch.ones_like(images)], dim=-1)

    targets = SemanticTargets(content=torch.ones(1, dtype=torch.float64), content_scale=2.0)
    return SemanticGuidedDenoiser(unconditional, lambda z: z, Polynomial(), targets, interval)


class LinearEmbedder:
    """E(I) = W·vec(I), and style features I itself (one map): gradients in closed form."""

    def __init__(self, weight: torch.Tensor):
        self.weight = weight

    def image(self, images):
        return images.flatten(1) @ self.weight

    def text(self, prompts):
        return torch.stack([torch.linspace(-1, 1, self.weight.shape[1], dtype=self.weight.dtype)
                            for _ in prompts])

    def style(self, images):
        return [images.flatten(2)]


@pytest.mark.parametrize("step", ["x0", "tilt"])
@pytest.mark.parametrize("sigma", SIGMAS)
def test_semantic_guidance_content_and_text_terms_in_closed_form(sigma, step):
    """A single Gaussian (D = μ + a·(x − μ), a = s²/(s² + σ²)), identity decoder, linear embedding:
    ∇_x̂₀ cos(W·x̂₀, e) = Wᵀ·(ê − (û·ê)·û)/|u| with u = W·D(x) (step x0), and the tilt's
    σ²·∇_x cos(W·D(x), e) = σ²·a times it."""
    from latentdiff.semantic_guidance import SemanticGuidedDenoiser, SemanticTargets

    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(12, 5, generator=generator, dtype=torch.float64)
    content = torch.randn(3, 2, 2, generator=generator, dtype=torch.float64)
    x = torch.randn(4, 3, 2, 2, generator=generator, dtype=torch.float64)
    s = torch.full((4,), sigma, dtype=torch.float64)
    a = STDS[0] ** 2 / (STDS[0] ** 2 + sigma ** 2)
    denoise = class_denoiser(0)
    embedder = LinearEmbedder(weight)
    targets = SemanticTargets(text="a prompt", text_scale=2.0, content=content, content_scale=3.0,
                              step=step)
    guided = SemanticGuidedDenoiser(lambda v, sig, c=None: denoise(v.flatten(1), sig).view_as(v),
                                    lambda z: z, embedder, targets)
    u = denoise(x.flatten(1), s) @ weight
    u_hat = u / u.norm(dim=-1, keepdim=True)
    expected = denoise(x.flatten(1), s)
    for scale, e in ((2.0, embedder.text(["a prompt"])), (3.0, content.flatten()[None] @ weight)):
        e_hat = e / e.norm(dim=-1, keepdim=True)
        along = e_hat - (u_hat * e_hat).sum(-1, keepdim=True) * u_hat
        factor = sigma ** 2 * a if step == "tilt" else 1.0
        expected = expected + factor * scale * (along / u.norm(dim=-1, keepdim=True)) @ weight.T
    torch.testing.assert_close(guided(x, s).flatten(1), expected, rtol=1e-5, atol=1e-6)


def test_semantic_style_guidance_moves_the_feature_statistics_towards_the_target():
    from latentdiff.semantic_guidance import SemanticGuidedDenoiser, SemanticTargets, gram

    generator = torch.Generator().manual_seed(1)
    style = torch.randn(3, 4, 4, generator=generator, dtype=torch.float64) * 2
    x = torch.randn(2, 3, 4, 4, generator=generator, dtype=torch.float64) * 0.5
    s = torch.full((2,), 0.3, dtype=torch.float64)
    guided = SemanticGuidedDenoiser(lambda v, sig, c=None: v, lambda z: z, LinearEmbedder(None),
                                    SemanticTargets(style=style, style_scale=0.5))

    def distance(images):
        return (gram(images.flatten(2)) - gram(style[None].flatten(2))).pow(2).sum()

    assert distance(guided(x, s)) < distance(x)  # one step closer in Gram statistics
