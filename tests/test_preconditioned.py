"""TDAS / preconditioned diffusion sampling (samplers/preconditioned.py): the operator M and M·Mᵀ
against explicit matrices, the PDS filters, and that the preconditioned Langevin corrector keeps the
exact noisy marginal of a Gaussian image distribution whose spectrum is known."""

import math

import pytest
import torch

from latentdiff.errors import UserError
from latentdiff.samplers import SAMPLERS, run_sampler
from latentdiff.samplers.preconditioned import (Preconditioner, sample_reverse_sde,
                                                target_statistics)

C, H, W = 2, 6, 6
BIG = (2, 16, 16)  # the Langevin test: its adaptive step biases the variance by O(1/dimension)


def explicit(operator) -> torch.Tensor:
    """The (C·H·W)² matrix of a linear map on (1, C, H, W) images, column by column."""
    basis = torch.eye(C * H * W, dtype=torch.float64).reshape(-1, C, H, W)
    return operator(basis).reshape(len(basis), -1).T


def symmetric_filter(generator, shape=(C, H, W)) -> torch.Tensor:
    """A filter over the DFT frequencies with R(u) = R(−u), as a real image's spectrum has."""
    r = torch.rand(shape, generator=generator, dtype=torch.float64) + 1
    flipped = torch.roll(torch.flip(r, dims=(1, 2)), shifts=(1, 1), dims=(1, 2))  # R(−u)
    return (r + flipped) / 2


def test_the_drift_is_m_times_m_transposed_and_real():
    g = torch.Generator().manual_seed(0)
    m = Preconditioner(symmetric_filter(g), torch.rand(C, H, W, generator=g, dtype=torch.float64) + 1)
    M = explicit(m.noise)
    torch.testing.assert_close(explicit(m.drift), M @ M.T, rtol=1e-10, atol=1e-10)
    identity = Preconditioner()
    x = torch.randn(3, C, H, W, dtype=torch.float64, generator=g)
    assert torch.equal(identity.noise(x), x) and torch.equal(identity.drift(x), x)


def test_the_pds_filters_run_from_one_to_alpha_over_alpha_minus_one():
    power = torch.tensor([[[0.0, 1.0], [3.0, math.e ** 2 - 1]]], dtype=torch.float64)
    m = Preconditioner.of_statistics(power, power, alpha=5.0)
    assert m.frequency.max() == pytest.approx(5 / 4) and m.frequency.min() == pytest.approx(1.0)
    assert m.space[0, 1, 1] == pytest.approx(1.0) and m.space[0, 0, 0] == pytest.approx(5 / 4)
    with pytest.raises(ValueError, match="alpha"):
        Preconditioner.of_statistics(power, None, alpha=1.0)
    stripes = torch.tensor([1.0, -1.0]).repeat(3).expand(4, 1, 6, 6).contiguous()  # period 2 in x
    spectrum, square = target_statistics(stripes)
    assert square.eq(1).all() and spectrum[0, 0, 3] == pytest.approx(36) and spectrum.sum() == 36


def test_the_preconditioned_langevin_corrector_keeps_the_noisy_marginal():
    """Data: a stationary Gaussian with power P(u) per frequency (independent DFT coefficients), so
    p_σ has variance P + σ² per frequency and D(x; σ) = F⁻¹ (P/(P + σ²)) F x. Fifty Langevin steps
    at σ, preconditioned by M, from exact samples of p_σ: the variance per frequency must stay
    (within the sampling error of 3000 samples, ±1.8 %; a drift and a noise that did not pair as
    M·Mᵀ and M would move it by the filters' factors, up to 4×)."""
    c, h, w = BIG
    g = torch.Generator().manual_seed(1)
    power = symmetric_filter(g, BIG) ** 6  # spread over about an order of magnitude
    sigma = torch.tensor(0.5, dtype=torch.float64)

    def spectral(x, gain):
        return torch.fft.ifft2(torch.fft.fft2(x, norm="ortho") * gain, norm="ortho").real

    def denoiser(x, s, cond=None):
        return spectral(x, power / (power + s ** 2))

    x = spectral(torch.randn(3000, c, h, w, dtype=torch.float64, generator=g),
                 (power + sigma ** 2).sqrt())
    m = Preconditioner(symmetric_filter(g, BIG), torch.rand(BIG, generator=g, dtype=torch.float64) + 1)
    out = sample_reverse_sde(denoiser, x, torch.stack([sigma, sigma]), corrector_steps=50, snr=0.05,
                             preconditioner=m, generator=torch.Generator().manual_seed(2))
    spectrum, start = torch.fft.fft2(out, norm="ortho"), torch.fft.fft2(x, norm="ortho")
    ratio = spectrum.abs().pow(2).mean(0) / (power + sigma ** 2) - 1
    assert abs(ratio.mean()) < 0.01 and ratio.abs().mean() < 0.025 and ratio.abs().max() < 0.09
    moved = (spectrum * start.conj()).real.mean(0) / (power + sigma ** 2)  # correlation with the start
    assert moved.min() < 0.5


def test_without_a_preconditioner_it_is_the_plain_sampler_and_a_wrong_size_is_refused():
    x = torch.randn(2, C, H, W, dtype=torch.float64)
    grid = torch.tensor([5.0, 1.0, 0.2, 0.0], dtype=torch.float64)

    def denoiser(x, s, cond=None):
        return x / (1 + s ** 2)

    plain = SAMPLERS["reverse_sde"].function(denoiser, x, grid, generator=torch.Generator().manual_seed(0))
    same = sample_reverse_sde(denoiser, x, grid, preconditioner=Preconditioner(torch.ones(C, H, W)),
                              generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(plain, same, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="compute the statistics at the sampling size"):
        sample_reverse_sde(denoiser, x, grid, preconditioner=Preconditioner(torch.ones(C, 4, 4)))
    with pytest.raises(UserError, match="must be a samplers.Preconditioner"):
        run_sampler("reverse_sde", denoiser, x, grid, preconditioner=2.0)
