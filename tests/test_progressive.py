"""Progressive and guided distillation, consistency training: the progressive target makes one
student step land where two teacher steps do, a guided student takes the scale as an input and
samples in N/2^H DDIM steps with one pass per step, the curricula of ECT and iCT are as published,
and a run of each method stopped inside a stage resumes bit-identically (a stage's teacher is
saved)."""

import pytest
import torch

from latentdiff.checkpoints import load_latent_diffusion
from latentdiff.checkpoints.io import read_tensors
from latentdiff.config import DistillConfig, load_config
from latentdiff.distillation import (ddim_step, ect_next_sigma, ict_grid, lognormal_index,
                                     progressive_distillation_loss, truncated_lognormal)
from latentdiff.errors import Interrupted, UserError
from latentdiff.pipelines import generate
from latentdiff.train.distill import distill
from latentdiff.train.engine import Run

PROMPTS = ["a red circle", "a blue square"]


def config(teacher, out, *extra):
    return load_config(DistillConfig, None, [f"teacher={teacher}", f"train.out_dir={out}",
                                             "num_intervals=8", "halvings=2",
                                             "train.batch_size=8", "train.lr=1e-3",
                                             "train.sample_every=0", "train.log_every=1", *extra])


def test_the_progressive_target_is_where_two_teacher_steps_land():
    def teacher(x, sigma, cond=None):
        return torch.tanh(x) * 0.8 + 0.1 * sigma.reshape(-1, 1)

    z0, noise = torch.randn(5, 3), torch.randn(5, 3)
    sigma, mid, nxt = torch.full((5,), 4.0), torch.full((5,), 1.5), torch.full((5,), 0.3)
    x = z0 + sigma[:, None] * noise
    two = ddim_step(ddim_step(x, teacher(x, sigma), sigma, mid), teacher(
        ddim_step(x, teacher(x, sigma), sigma, mid), mid), mid, nxt)

    def exact_student(x_in, s, cond=None):  # the x̂₀ whose one DDIM step lands on `two`
        return (two - (nxt / s)[:, None] * x_in) / (1 - (nxt / s)[:, None])

    torch.testing.assert_close(ddim_step(x, exact_student(x, sigma), sigma, nxt), two)
    assert progressive_distillation_loss(exact_student, teacher, z0, noise, sigma, mid, nxt,
                                         None).max() < 1e-10
    assert progressive_distillation_loss(teacher, teacher, z0, noise, sigma, mid, nxt,
                                         None).min() > 1e-4


def test_a_guided_student_samples_in_its_halved_steps_with_one_pass_each(teacher, tmp_path):
    checkpoint = distill(config(teacher, tmp_path, "guidance_max=4", "guidance_scale=2",
                                "train.max_steps=6"), "guided")
    student = load_latent_diffusion(checkpoint)
    s = student.student
    assert (s.consistency, s.sampler, s.spacing, s.steps) == (False, "ddim", "trailing", 2)
    assert student.unet.config.guidance_embedding and "unet_stage.weight" not in read_tensors(
        checkpoint)
    assert read_tensors(checkpoint, "unet_stage.")  # stages 2 and 3 were taught by a student
    calls = []
    forward = student.unet.forward
    student.unet.forward = lambda x, *a, **k: calls.append(len(x)) or forward(x, *a, **k)
    images = generate(student, [0, 1], prompts=PROMPTS, guidance_scale=3.0)
    assert calls == [2, 2] and images.shape == (2, 3, 16, 16) and torch.isfinite(images).all()


def test_progressive_refuses_guidance_and_grids_it_cannot_halve(teacher, tmp_path):
    with pytest.raises(UserError, match="progressive distils the unguided model"):
        distill(config(teacher, tmp_path / "a", "guidance_max=4", "train.max_steps=4"),
                "progressive")
    with pytest.raises(UserError, match="cannot be halved"):
        distill(config(teacher, tmp_path / "b", "num_intervals=6", "train.max_steps=4"),
                "progressive")
    with pytest.raises(UserError, match="equal stages"):
        distill(config(teacher, tmp_path / "c", "train.max_steps=5"), "progressive")


@pytest.mark.parametrize("method,extra", [("progressive", ()),
                                          ("guided", ("guidance_max=4", "guidance_scale=2")),
                                          ("ect", ("ct_stages=2",)), ("ict", ())])
def test_a_run_stopped_inside_a_stage_resumes_bit_identically(teacher, tmp_path, monkeypatch,
                                                              method, extra):
    steps = 6 if method == "guided" else 4
    straight = distill(config(teacher, tmp_path / "a", f"train.max_steps={steps}", *extra),
                       method)
    calls = {"n": 0}
    original = Run.should_stop

    def stop_after_three(self, max_minutes):
        calls["n"] += 1
        return (False, calls["n"] == steps - 1)

    monkeypatch.setattr(Run, "should_stop", stop_after_three)
    with pytest.raises(Interrupted):
        distill(config(teacher, tmp_path / "b", f"train.max_steps={steps}", *extra), method)
    monkeypatch.setattr(Run, "should_stop", original)
    resumed = distill(config(teacher, tmp_path / "b", f"train.max_steps={steps}", *extra), method,
                      resume=True)
    a, b = read_tensors(straight), read_tensors(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_consistency_training_curricula():
    sigma = torch.tensor([0.01, 0.5, 3.0, 80.0])
    assert torch.equal(ect_next_sigma(sigma, 0, 0.002), torch.full((4,), 0.002))
    gaps = [(sigma - ect_next_sigma(sigma, a, 0.002)) / sigma for a in (3, 4, 5)]
    torch.testing.assert_close(gaps[0] / gaps[1], torch.full((4,), 2.0))  # halves per stage
    torch.testing.assert_close(gaps[1] / gaps[2], torch.full((4,), 2.0))
    first, last = ict_grid(0.002, 80.0, 0, 1000), ict_grid(0.002, 80.0, 999, 1000)
    assert len(first) == 11 and len(last) == 1281
    assert first[0] == pytest.approx(0.002) and first[-1] == pytest.approx(80.0)
    assert (last[1:] > last[:-1]).all()
    u = torch.rand(200_000, generator=torch.Generator().manual_seed(0))
    i = lognormal_index(first, u)
    edges = torch.erf((first.log() + 1.1) / (2 ** 0.5 * 2.0))
    expected = (edges[1:] - edges[:-1]) / (edges[-1] - edges[0])
    observed = torch.bincount(i, minlength=10).double() / len(u)
    torch.testing.assert_close(observed, expected, atol=3e-3, rtol=0)
    sigma = truncated_lognormal(u, 0.1, 14.6)
    assert sigma.min() >= 0.1 and sigma.max() <= 14.6
    inside = torch.special.ndtr((torch.tensor([0.1, 1.0, 14.6]).log() + 1.1) / 2.0)
    share_below_1 = (inside[1] - inside[0]) / (inside[2] - inside[0])
    assert (sigma < 1.0).double().mean().item() == pytest.approx(share_below_1.item(), abs=3e-3)


def test_consistency_training_refuses_guidance(teacher, tmp_path):
    with pytest.raises(UserError, match="cannot fold in guidance"):
        distill(config(teacher, tmp_path, "guidance_max=4", "train.max_steps=2"), "ect")
