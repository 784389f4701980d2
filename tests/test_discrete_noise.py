"""VQ-Diffusion's mask-and-replace process: the closed forms against explicit transition matrices."""

import pytest
import torch

from latentdiff.config import MaskReplaceConfig
from latentdiff.discrete_noise import MaskReplaceSchedule, one_step_matrix, transition_matrix
from latentdiff.errors import UserError

K = 5


@pytest.fixture
def schedule():
    return MaskReplaceSchedule(MaskReplaceConfig(num_timesteps=12, alpha_bar_end=0.01,
                                                 gamma_bar_end=0.7), K)


def test_every_transition_matrix_is_stochastic_with_an_absorbing_mask(schedule):
    for t in range(1, schedule.T + 1):
        Q = one_step_matrix(schedule, t)
        torch.testing.assert_close(Q.sum(0), torch.ones(K + 1, dtype=torch.float64))
        assert (Q >= 0).all() and Q[K, K] == 1 and (Q[:K, K] == 0).all()


def test_the_closed_form_cumulative_matrix_is_the_product_of_the_one_step_ones(schedule):
    product = torch.eye(K + 1, dtype=torch.float64)
    for t in range(1, schedule.T + 1):
        product = one_step_matrix(schedule, t) @ product  # Q̄_t = Q_t ⋯ Q_1
        torch.testing.assert_close(transition_matrix(schedule, 0, t), product, rtol=1e-12, atol=1e-14)
    for s, t in ((2, 7), (5, 12), (0, 1)):  # skipping steps: q(x_t | x_s) = Q_t ⋯ Q_{s+1}
        skipped = torch.eye(K + 1, dtype=torch.float64)
        for u in range(s + 1, t + 1):
            skipped = one_step_matrix(schedule, u) @ skipped
        torch.testing.assert_close(transition_matrix(schedule, s, t), skipped, rtol=1e-12, atol=1e-14)
    end = schedule.transition(0, schedule.T)
    assert abs(end.alpha - 0.01) < 1e-12 and abs(end.gamma - 0.7) < 1e-12


def test_q_probs_are_the_matrix_columns_and_q_sample_draws_them(schedule):
    x = torch.tensor([[0, 3, K, 1]])
    for s, t in ((0, 4), (3, 9)):
        Q = transition_matrix(schedule, s, t)
        torch.testing.assert_close(schedule.q_probs(x, s, t)[0], Q[:, x[0]])
    x0 = torch.full((1, 40000), 2)
    drawn = schedule.q_sample(x0, 6, generator=torch.Generator().manual_seed(0))
    frequencies = torch.bincount(drawn.flatten(), minlength=K + 1).double() / x0.numel()
    torch.testing.assert_close(frequencies, transition_matrix(schedule, 0, 6)[:, 2], atol=0.01, rtol=0)


def test_the_posterior_is_bayes_rule_with_the_matrices(schedule):
    torch.manual_seed(0)
    x0_probs = torch.softmax(torch.randn(2, K, 3, dtype=torch.float64), dim=1)
    x_t = torch.tensor([[1, K, 4], [K, K, 0]])
    for s, t in ((4, 5), (2, 9), (0, 3)):
        got = schedule.posterior(x0_probs, x_t, s, t)
        Qs, Qst, Qt = (transition_matrix(schedule, *st) for st in ((0, s), (s, t), (0, t)))
        for b in range(2):
            for n in range(3):
                m = x_t[b, n]
                # Σ_x0 p(x0)·q(x_t = m | x_s = k)·q(x_s = k | x0)/q(x_t = m | x0)
                expected = sum(x0_probs[b, j, n] * Qst[m, :] * Qs[:, j] / Qt[m, j] for j in range(K))
                torch.testing.assert_close(got[b, :, n], expected / expected.sum())
    # a code at t comes from a code, never from [MASK]; a [MASK] at t may have been one at s > 0
    got = schedule.posterior(x0_probs, x_t, 2, 9)
    assert got[1, K, 2] == 0 and got[0, K, 1] > 0
    assert (schedule.posterior(x0_probs, x_t, 0, 9)[:, K] == 0).all()  # x_0 is never [MASK]


def test_the_schedule_is_checked():
    with pytest.raises(UserError, match="mask_replace"):
        MaskReplaceConfig(alpha_bar_end=0.5, gamma_bar_end=0.6)


def test_the_vq_diffusion_loss_vanishes_only_for_the_true_codes(schedule):
    from latentdiff.discrete_objective import vq_diffusion_loss
    torch.manual_seed(0)
    x0 = torch.randint(0, K, (3, 8))
    t = torch.tensor([1, 4, 12])
    x_t = schedule.q_sample(x0, t, generator=torch.Generator().manual_seed(1))
    perfect = 60.0 * torch.nn.functional.one_hot(x0, K).permute(0, 2, 1).double()
    assert vq_diffusion_loss(schedule, x0, x_t, t, perfect).abs().max() < 1e-12
    logits = torch.randn(3, K, 8, dtype=torch.float64, requires_grad=True)
    loss = vq_diffusion_loss(schedule, x0, x_t, t, logits, aux_weight=0.0)
    assert (loss > 0).all()
    # at t = 1 the bound is the decoder's −log p_θ(x_0 | x_1)
    nll = -torch.log_softmax(logits, 1).gather(1, x0[:, None])[:, 0].mean(1)
    torch.testing.assert_close(loss[0], nll[0])
    loss.sum().backward()
    assert logits.grad.abs().sum() > 0
