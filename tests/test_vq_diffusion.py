"""VQ-Diffusion: the mask-and-replace process in closed form against explicit transition matrices,
its loss, the code transformer and the reverse sampler."""

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


def test_the_code_transformer_gives_code_logits_for_any_grid():
    from latentdiff.config import DiTConfig
    from latentdiff.vq_diffusion import CodeTransformer
    net = CodeTransformer(K, DiTConfig(in_channels=16, out_channels=K, patch_size=1, hidden_size=64,
                                       depth=2, num_heads=2, context_dim=8))
    codes = torch.randint(0, K + 1, (2, 4, 6))
    out = net(codes, torch.tensor([3, 90]), context=torch.randn(2, 5, 8))
    assert out.shape == (2, K, 4, 6)
    with pytest.raises(ValueError, match="patch_size 1"):
        CodeTransformer(K, DiTConfig(in_channels=16, out_channels=K, patch_size=2))


@pytest.mark.parametrize("steps", [12, 4, 1])
def test_sampling_with_the_exact_x0_posterior_draws_the_data_distribution(schedule, steps):
    """Tokens i.i.d. with p(x_0 = k) = p_k: the exact p(x_0 | x_t) ∝ p_k·q(x_t | x_0 = k) per token, and
    the reparameterised reverse process (with skipped steps too) must then draw x_0 ~ p."""
    from latentdiff.vq_diffusion import prior_sample, sample_codes
    p = torch.tensor([0.5, 0.25, 0.15, 0.1, 0.0], dtype=torch.float64)

    def exact(x_t, t):
        joint = p[None, :, None] * schedule.q_probs_all(x_t, t)
        return (joint / joint.sum(1, keepdim=True)).clamp(min=1e-300).log()

    g = torch.Generator().manual_seed(0)
    x0 = sample_codes(exact, schedule, prior_sample(schedule, (4, 5000), g), steps, g)
    frequencies = torch.bincount(x0.flatten(), minlength=K + 1).double() / x0.numel()
    torch.testing.assert_close(frequencies[:K], p, atol=0.01, rtol=0)
    assert frequencies[K] == 0


def test_guidance_on_the_x0_distribution():
    from latentdiff.vq_diffusion import guided_log_probs
    cond = torch.log_softmax(torch.randn(2, K, 3), 1)
    uncond = torch.log_softmax(torch.randn(2, K, 3), 1)
    torch.testing.assert_close(guided_log_probs(cond, uncond, 1.0), cond)
    strong = guided_log_probs(cond, uncond, 3.0)
    torch.testing.assert_close(strong.exp().sum(1), torch.ones(2, 3))
    # a large scale picks the code the condition favours most over the unconditional model
    assert torch.equal(guided_log_probs(cond, uncond, 1e4).argmax(1), (cond - uncond).argmax(1))


def test_the_prior_is_the_marginal_of_uniform_codes_and_draws_follow_their_probabilities(schedule):
    from latentdiff.discrete_noise import draw
    every_code = torch.arange(K)[:, None]  # (K, 1): each code once
    marginal = schedule.q_probs(every_code, 0, schedule.T)[:, :, 0].mean(0)
    torch.testing.assert_close(schedule.prior_probs(), marginal)
    probs = torch.tensor([0.2, 0.0, 0.5, 0.3], dtype=torch.float64)[None, :, None].expand(1, 4, 6)
    u = torch.tensor([[0.1, 0.19, 0.21, 0.69, 0.71, 0.999]], dtype=torch.float64)
    assert draw(probs, uniforms=u).tolist() == [[0, 0, 2, 2, 3, 3]]  # the inverse CDF; code 1 never
    generators = [torch.Generator().manual_seed(s) for s in (3, 4)]
    both = draw(probs.expand(2, 4, 6), generators)
    assert torch.equal(both[1], draw(probs, [torch.Generator().manual_seed(4)])[0])
