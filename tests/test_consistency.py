"""Consistency models and latent consistency distillation: the boundary condition holds exactly,
multistep consistency sampling draws the data with an exact consistency function, a student starts
as its teacher, a short distillation run moves it towards the teacher's ODE solutions, and a resumed
run is bit-identical to an uninterrupted one."""

import copy
import math
from pathlib import Path

import pytest
import torch

from conftest import tiny_ldm_config
from mixture import MEANS, WEIGHTS, mixture_denoiser, moments, ode_reference, sample_marginal
from latentdiff.checkpoints import load_latent_diffusion
from latentdiff.checkpoints.io import read_tensors
from latentdiff.cli import main
from latentdiff.conditioning import Cond
from latentdiff.config import (DistillConfig, NoiseScheduleConfig, StudentConfig, UNetConfig,
                               load_config)
from latentdiff.consistency import Boundary, ConsistencyDenoiser, LCMBoundary
from latentdiff.denoiser import Denoiser
from latentdiff.errors import UserError
from latentdiff.nn.lora import adaptable_layers, adapter_state, add_lora, merged_state
from latentdiff.noise import NoiseSchedule
from latentdiff.pipelines import generate
from latentdiff.samplers import SAMPLERS, sigma_grid
from latentdiff.train.diffusion import train_latent_diffusion
from latentdiff.train.distill import distill
from latentdiff.unet import UNetModel

PROMPTS = ["a red circle", "a blue square", "a green triangle", "a small red square"] * 2


def wild_denoiser(x, sigma, cond=None):
    """Any denoiser: the boundary must not depend on it."""
    return 3.0 * torch.sin(x) + 7.0


def test_boundary_condition_holds_exactly():
    sigma_min = 0.0292
    f = ConsistencyDenoiser(wild_denoiser, Boundary(sigma_min, 1e-3))
    x = torch.randn(4, 2, 3, 3, generator=torch.Generator().manual_seed(0)) * 5
    assert torch.equal(f(x, torch.tensor(sigma_min)), x)
    # far from σ_min it is the denoiser (c_out → 1, c_skip → 0), and c_skip² + … stays bounded
    torch.testing.assert_close(f(x, 10.0), wild_denoiser(x, 10.0), rtol=1e-6, atol=1e-6)
    schedule = NoiseSchedule(NoiseScheduleConfig(kind="scaled_linear", beta_start=0.00085,
                                                 beta_end=0.012))
    lcm = ConsistencyDenoiser(wild_denoiser, LCMBoundary(schedule))
    sigma_0 = schedule.sigmas[0]
    # LCM's boundary keeps the VP latent z_0 = x/√(1 + σ_0²) at timestep 0
    torch.testing.assert_close(lcm(x, sigma_0), x / (1 + sigma_0 ** 2).sqrt(), rtol=0, atol=1e-6)


def test_consistency_sampling_draws_a_gaussian_exactly_at_every_step_count():
    """Data N(0, s²): the PF-ODE trajectory is x ∝ √(s² + σ²), so f(x, σ) = x·s/√(s² + σ²) exactly;
    one or several consistency steps then give N(0, s²)."""
    s, n = 0.7, 40_000

    def f(x, sigma, cond=None):
        return x * s / math.sqrt(s ** 2 + float(sigma) ** 2)

    for steps in (1, 2, 4):
        sigmas = torch.cat([torch.logspace(2, -1, steps, dtype=torch.float64),
                            torch.zeros(1, dtype=torch.float64)])
        x = torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(steps))
        out = SAMPLERS["consistency"].function(f, x * math.sqrt(s ** 2 + 1e4), sigmas,
                                               generator=torch.Generator().manual_seed(9))
        assert out.std().item() == pytest.approx(s, rel=0.02)
        assert abs(out.mean().item()) < 0.02


def test_consistency_sampling_draws_the_mixture_with_its_exact_consistency_function():
    """The exact f of the 1-D Gaussian mixture is the PF-ODE solved to σ ≈ 0 (tests/mixture.py)."""
    def f(x, sigma, cond=None):
        return ode_reference(x, float(sigma), 1e-4)

    sigmas = torch.tensor([80.0, 2.0, 0.5, 0.0], dtype=torch.float64)
    x = sample_marginal(4000, 80.0, torch.Generator().manual_seed(2))
    out = SAMPLERS["consistency"].function(f, x, sigmas, generator=torch.Generator().manual_seed(3))
    mean, std = moments()
    assert out.mean().item() == pytest.approx(mean, abs=0.05)
    assert out.std().item() == pytest.approx(std, rel=0.05)
    share = (out < (MEANS[0] + MEANS[1]) / 2).double().mean().item()
    assert share == pytest.approx(WEIGHTS[0], abs=0.03)
    # the diffusion denoiser itself is not a consistency function: one step gives E[x0 | x_T]
    assert SAMPLERS["consistency"].function(mixture_denoiser, x, sigmas[[0, 3]]).std() < std / 2


def test_the_lcm_grid_is_a_subset_of_the_distillation_grid():
    schedule = NoiseSchedule(NoiseScheduleConfig())
    full = sigma_grid(schedule, 50, "lcm", original_steps=50)
    for steps in (1, 2, 4, 8):
        grid = sigma_grid(schedule, steps, "lcm", original_steps=50)
        assert grid[-1] == 0 and len(grid) == steps + 1
        assert all(s in full for s in grid[:-1]) and grid[0] == schedule.sigmas[-1]
    with pytest.raises(UserError, match="distilled on"):
        sigma_grid(schedule, 8, "lcm", original_steps=4)


def student_config(teacher, out, *extra):
    return load_config(DistillConfig, None, [f"teacher={teacher}", f"train.out_dir={out}",
                                             "guidance_min=1", "guidance_max=4",
                                             "guidance_scale=2", "train.batch_size=8",
                                             "train.lr=1e-3", "train.sample_every=0",
                                             "train.log_every=1", *extra])


def test_a_student_starts_as_its_teacher_at_every_guidance_scale(teacher, tmp_path):
    model = load_latent_diffusion(teacher)
    student = load_latent_diffusion(distill(student_config(teacher, tmp_path, "train.max_steps=1",
                                                           "train.lr=1e-12")))
    assert student.unet.config.guidance_embedding and student.student.guidance_max == 4
    x = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    cond = model.conditioner.condition(PROMPTS[:2], "cpu")
    sigma = torch.tensor(3.0)
    for s in (1.0, 4.0):
        guided = Cond(context=cond.context, context_mask=cond.context_mask,
                      guidance=torch.full((2,), s))
        d_student = Denoiser(student.unet, model.denoiser.precond)(x, sigma, guided)
        torch.testing.assert_close(d_student, model.denoiser(x, sigma, cond), atol=1e-4, rtol=1e-4)


def test_short_distillation_moves_the_student_towards_the_teachers_ode_solutions(teacher, tmp_path):
    """One consistency step from x_T against the teacher's guided DDIM-100 result from the same
    x_T: the distance falls within 60 steps of distillation (4 ODE intervals)."""
    model = load_latent_diffusion(teacher)
    seeds = list(range(8))
    reference = generate(model, seeds, prompts=PROMPTS, guidance_scale=2.0, steps=100,
                         decode=False)

    def distance(steps):
        checkpoint = distill(student_config(teacher, tmp_path, "num_intervals=4", "steps=1",
                                            "target_decay=0", "ema_decay=0",
                                            f"train.max_steps={steps}"), resume=True)
        out = generate(load_latent_diffusion(checkpoint), seeds, prompts=PROMPTS, decode=False)
        return (out - reference).pow(2).mean().sqrt().item()

    start = distance(1)
    assert distance(60) < 0.85 * start


@pytest.mark.parametrize("method", ["lcd", "lcd-lora"])
def test_resumed_distillation_is_bit_identical(teacher, tmp_path, method):
    options = ("lora_rank=2",)
    straight = distill(student_config(teacher, tmp_path / "a", "train.max_steps=4", *options),
                       method)
    distill(student_config(teacher, tmp_path / "b", "train.max_steps=2", *options), method)
    resumed = distill(student_config(teacher, tmp_path / "b", "train.max_steps=4", *options),
                      method, resume=True)
    a, b = read_tensors(straight), read_tensors(resumed)
    assert a.keys() == b.keys() and {k.split(".")[0] for k in a} >= {"unet", "unet_ema",
                                                                       "unet_target", "optimizer"}
    for key in a:
        assert torch.equal(a[key], b[key]), key
    with pytest.raises(UserError, match="not a lcd"):
        other = "lcd" if method == "lcd-lora" else "lcd-lora"
        distill(student_config(teacher, tmp_path / "b", "train.max_steps=5", *options), other,
                resume=True)


def test_low_rank_adapters_start_at_zero_and_merge_exactly():
    unet = UNetModel(UNetConfig(in_channels=2, out_channels=2, model_channels=32,
                                channel_mult=(1, 1), num_res_blocks=1, attention_resolutions=(2,)))
    torch.manual_seed(0)
    with torch.no_grad():  # the zero-initialised output layers would hide every change
        for parameter in unet.parameters():
            parameter.normal_(0, 0.1)
    x, t = torch.randn(2, 2, 8, 8), torch.tensor([10.0, 500.0])
    before = unet(x, t)
    adapted = add_lora(copy.deepcopy(unet), adaptable_layers(unet, ("input_blocks", "output_blocks")),
                       rank=3, alpha=6.0)
    torch.testing.assert_close(adapted(x, t), before, rtol=0, atol=0)
    for key, value in adapter_state(adapted).items():
        if key.endswith("up"):
            value.normal_()
    merged = copy.deepcopy(unet)
    merged.load_state_dict(merged_state(adapted))
    assert not torch.allclose(merged(x, t), before, atol=1e-3)
    torch.testing.assert_close(merged(x, t), adapted(x, t), rtol=1e-5, atol=1e-5)


def test_an_adapter_student_is_small_names_its_teacher_and_samples(teacher, tmp_path):
    checkpoint = distill(student_config(teacher, tmp_path / "s", "train.max_steps=2",
                                        "lora_rank=2"), "lcd-lora")
    tensors = read_tensors(checkpoint, "unet_ema.")
    assert tensors and all("parametrizations.weight.0." in k or k.startswith("guidance_proj")
                           for k in tensors)
    assert not read_tensors(checkpoint, "autoencoder.")
    exported = tmp_path / "adapter.safetensors"
    assert main(["export", str(checkpoint), str(exported)]) == 0
    assert exported.stat().st_size < Path(teacher).stat().st_size / 4
    student = load_latent_diffusion(exported)
    full = load_latent_diffusion(teacher)
    assert student.student.guidance_scale == 2 and not any(
        "parametrizations" in k for k in student.unet.state_dict())
    images = generate(student, [0, 1], prompts=PROMPTS[:2])
    assert images.shape == (2, 3, 16, 16) and torch.isfinite(images).all()
    # the adapters moved the weights (2 steps at lr 1e-3), the rest is the teacher's
    changed = [k for k, v in full.unet.state_dict().items()
               if not torch.equal(v, student.unet.state_dict()[k])]
    assert changed and all(k.startswith(("input_blocks", "middle_block", "output_blocks"))
                           for k in changed)
    moved = tmp_path / "elsewhere" / "adapter.safetensors"
    moved.parent.mkdir()
    exported.rename(moved)
    Path(teacher).rename(Path(teacher).with_suffix(".moved"))
    try:
        with pytest.raises(UserError, match="put the teacher there"):
            load_latent_diffusion(moved)
    finally:
        Path(teacher).with_suffix(".moved").rename(teacher)


def test_student_samples_in_its_own_steps_with_one_pass_per_step(teacher, tmp_path, capsys):
    checkpoint = distill(student_config(teacher, tmp_path / "s", "train.max_steps=1"))
    student = load_latent_diffusion(checkpoint)
    assert student.student == StudentConfig(
        consistency=True, sigma_min=float(student.schedule.sigmas[0]), boundary_width=1e-3,
        sampler="consistency", steps=4, spacing="lcm", original_steps=50, guidance_scale=2.0,
        guidance_min=1.0, guidance_max=4.0)
    calls = []
    forward = student.unet.forward
    student.unet.forward = lambda x, *a, **k: calls.append(len(x)) or forward(x, *a, **k)
    generate(student, [0, 1], prompts=PROMPTS[:2])
    assert calls == [2] * 4  # 4 steps, the guided batch of 2 in one pass each
    with pytest.raises(UserError, match="distilled for"):
        generate(student, [0], prompts=PROMPTS[:1], guidance_scale=6.0)
    with pytest.raises(UserError, match="one pass per step"):
        generate(student, [0], prompts=PROMPTS[:1], negative_prompts=["x"])
    out = tmp_path / "s.png"
    assert main(["sample", str(checkpoint), "--prompt", "a red circle", "--out", str(out)]) == 0
    assert out.is_file()
    assert main(["distill", "lcd", str(checkpoint), f"train.out_dir={tmp_path / 'x'}"]) == 2
    assert "distilled student" in capsys.readouterr().err


def test_guided_distillation_needs_a_teacher_with_an_unconditional_mode(tmp_path,
                                                                        trained_autoencoder):
    plain = train_latent_diffusion(tiny_ldm_config(tmp_path / "t", trained_autoencoder,
                                                   "train.max_steps=1"))
    with pytest.raises(UserError, match="unconditional mode"):
        distill(student_config(plain, tmp_path / "s"))
    checkpoint = distill(load_config(DistillConfig, None, [
        f"teacher={plain}", f"train.out_dir={tmp_path / 'c'}", "train.max_steps=1",
        "train.batch_size=8", "train.sample_every=1"]))
    student = load_latent_diffusion(checkpoint)
    assert not student.unet.config.guidance_embedding
    assert (tmp_path / "c" / "samples" / "step-0000001.png").is_file()
    images = generate(student, [0, 1], class_labels=[3, 4], steps=2)
    assert images.shape == (2, 1, 16, 16) and torch.isfinite(images).all()


@pytest.mark.parametrize("argv,message", [
    (["distill", "lcd", "{teacher}", "guidance_max=0.5"], "guidance_max=0.5 must hold"),
    (["distill", "lcd", "{missing}"], "does not exist"),
    (["distill", "lcm", "{teacher}"], "invalid choice"),
    (["distill", "progressive", "{teacher}", "num_intervals=50"], "cannot be halved"),
    (["distill", "lcd", "{teacher}", "steps=80"], "num_intervals=50"),
    (["distill", "lcd", "{teacher}", "lora_rank=0"], "lora_rank must be"),
])
def test_distill_bad_input_is_one_line_before_any_work(teacher, tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    argv = [a.format(teacher=teacher, missing=tmp_path / "none.safetensors") for a in argv]
    assert main([*argv, f"train.out_dir={out}"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not out.exists()
