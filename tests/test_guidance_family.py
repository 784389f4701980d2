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


@pytest.mark.parametrize("sigma", SIGMAS)
def test_the_unconditional_prior_mixes_the_two_scores(sigma):
    x, s = points(sigma)
    prior = PriorDenoiser(class_denoiser(0), unconditional, 0.3)
    conditional = grad(lambda v: log_joint(v, s)[:, 0], x)  # ∇ log p(x | y=0)
    marginal = grad(lambda v: log_marginal(v, s), x)
    expected = x + sigma ** 2 * (0.7 * conditional + 0.3 * marginal)  # p_c^0.7·p_u^0.3
    torch.testing.assert_close(prior(x, s), expected, rtol=0, atol=1e-5)


def test_outside_the_sigma_interval_every_wrapper_is_the_plain_denoiser():
    x, s = points(1.5)
    labels = torch.zeros(len(x), dtype=torch.long)
    wrappers = [ClassifierGuidedDenoiser(unconditional, classifier, labels, 4.0, interval=(2.0, 9.0)),
                AutoGuidedDenoiser(unconditional, class_denoiser(1), Cond(), 4.0, interval=(2.0, 9.0)),
                PriorDenoiser(unconditional, class_denoiser(1), 0.5, interval=(2.0, 9.0))]
    for wrapper in wrappers:
        torch.testing.assert_close(wrapper(x, s), unconditional(x, s), rtol=0, atol=0)
        inside = wrapper(x, torch.full_like(s, 3.0))
        assert not torch.allclose(inside, unconditional(x, torch.full_like(s, 3.0)))
