"""Frido's coarse-to-fine denoising (`coarse_to_fine.py`): the stage batch, the stage inputs, the
stage denoiser, the stage loop, and a tiny model trained, reloaded and sampled end to end."""

import pytest
import torch

from latentdiff.autoencoder.pyramid import blocks, levels, project
from latentdiff.coarse_to_fine import (StageDenoiser, network_channels, sample_stages,
                                       stage_inputs, stage_latents, stage_noise, training_batch,
                                       with_stage_inputs)
from latentdiff.conditioning import Cond
from latentdiff.errors import UserError


def test_network_channels_are_one_level_plus_the_coarser_levels_and_the_stage_map():
    assert network_channels(4, 2) == (2 + 4 + 2, 2)
    assert network_channels(6, 3, concat=5) == (2 + 5 + 6 + 3, 2)


def test_stage_latents_pick_each_samples_level():
    z = torch.arange(2 * 6 * 2 * 2, dtype=torch.float).view(2, 6, 2, 2)
    picked = stage_latents(z, torch.tensor([2, 0]), 3)
    assert torch.equal(picked[0], z[0, 4:6]) and torch.equal(picked[1], z[1, 0:2])


def test_stage_noise_has_the_levels_block_structure_and_unit_variance():
    g = torch.Generator().manual_seed(0)
    stage = torch.tensor([0, 1] * 2000)
    n = stage_noise(torch.randn(4000, 2, 4, 4, generator=g), stage, 2)
    coarse, fine = n[stage == 0], n[stage == 1]
    assert torch.equal(coarse[:, :, 0::2, 0::2], coarse[:, :, 1::2, 1::2])  # 2×2 blocks
    assert not torch.equal(fine[:, :, 0::2, 0::2], fine[:, :, 1::2, 1::2])
    for part in (coarse[:, :, ::2, ::2], fine):
        assert abs(part.mean()) < 0.03 and abs(part.var() - 1) < 0.03


def test_stage_inputs_hold_the_mixed_coarser_levels_and_a_one_hot_stage():
    z, n = torch.randn(3, 6, 4, 4), torch.randn(3, 6, 4, 4)
    stage = torch.tensor([0, 1, 2])
    inputs = stage_inputs(z, stage, 3, 0.1, n)
    assert inputs.shape == (3, 6 + 3, 4, 4)
    mixed = 0.9 * z + 0.1 * n
    assert torch.equal(inputs[0, :6], torch.zeros(6, 4, 4))  # the coarsest stage: no condition
    assert torch.allclose(inputs[1, :2], mixed[1, :2]) and not inputs[1, 2:6].any()
    assert torch.allclose(inputs[2, :4], mixed[2, :4]) and not inputs[2, 4:6].any()
    assert torch.equal(inputs[:, 6:, 0, 0], torch.eye(3))


def test_the_training_batch_denoises_one_level_with_its_structure():
    z0 = project(torch.randn(8, 4, 4, 4), 2)
    stage = torch.tensor([0, 1] * 4)
    target, noise, cond = training_batch(z0, torch.randn(8, 4, 4, 4), Cond(), stage,
                                         torch.randn(8, 4, 4, 4), 2, 0.0)
    assert target.shape == noise.shape == (8, 2, 4, 4)
    assert torch.equal(target[0], z0[0, :2]) and torch.equal(target[1], z0[1, 2:])
    # the coarse stage's x = z0 + σ·n stays block-constant
    x = target[0::2] + 3.0 * noise[0::2]
    assert torch.allclose(x[:, :, 0::2, 0::2], x[:, :, 1::2, 1::2])
    assert torch.equal(cond.concat[1, :2], z0[1, :2]) and cond.concat.shape == (8, 6, 4, 4)


def test_stage_inputs_follow_a_batched_conditional_and_null_half():
    inputs = torch.randn(2, 3, 4, 4)
    cond = with_stage_inputs(Cond(concat=torch.ones(4, 1, 4, 4)), inputs, 4)  # cond ⊕ uncond
    assert cond.concat.shape == (4, 4, 4, 4)
    assert torch.equal(cond.concat[2:, 1:], inputs) and torch.equal(cond.concat[:2, 1:], inputs)
    assert torch.equal(with_stage_inputs(None, inputs, 2).concat, inputs)


class _Recorder:
    """A denoiser that returns its input plus the stage map's index and remembers the inputs."""

    def __init__(self):
        self.seen = []

    def __call__(self, x, sigma, cond=None):
        self.seen.append((x, cond.concat))
        return x + cond.concat[:, -2:].argmax(1, keepdim=True)


def test_the_stage_denoiser_projects_its_input_and_output_onto_the_level():
    inner = _Recorder()
    stages = StageDenoiser(inner, 2)
    stages.enter(stage_inputs(torch.zeros(1, 4, 4, 4), torch.tensor([0]), 2, 0.1,
                              torch.zeros(1, 4, 4, 4)), 2)
    x = torch.randn(1, 2, 4, 4)
    out = stages(x, 1.0)
    means = blocks(x, 2)  # the 2×2 block means
    assert torch.allclose(means[0, :, 0, 0], x[0, :, :2, :2].mean((1, 2)))
    assert torch.allclose(inner.seen[0][0], means) and torch.allclose(out, means)


def test_the_stage_loop_samples_the_coarsest_level_first_and_conditions_on_it():
    inner = _Recorder()
    stages = StageDenoiser(inner, 2)
    calls = []

    def run(noise, s):
        calls.append(s)
        return stages(noise, 1.0) + 10 * (s + 1)

    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    z = sample_stages(stages, run, (4, 4, 4), gens, 0.0, torch.device("cpu"))
    assert calls == [0, 1] and torch.allclose(project(z, 2), z, atol=1e-6)
    coarse, fine = levels(z, 2)
    # stage 1 saw stage 0's result exactly (no noise mix) and its own one-hot map
    seen_inputs = inner.seen[1][1]
    assert torch.allclose(seen_inputs[:, :2], z[:, :2]) and seen_inputs[:, -1].eq(1).all()
    assert (coarse > 5).all() and (fine > 15).all()


@pytest.fixture(scope="module")
def frido(tmp_path_factory):
    """A tiny pyramid autoencoder (2 levels of 2 channels) and a coarse-to-fine model on it."""
    from latentdiff.train.autoencoder import train_autoencoder
    from latentdiff.train.diffusion import train_latent_diffusion
    from conftest import tiny_autoencoder_config, tiny_ldm_config

    out = tmp_path_factory.mktemp("frido")
    ae = train_autoencoder(tiny_autoencoder_config(
        out / "ae", "model.latent_channels=4", "model.pyramid_levels=2", "train.max_steps=2"))
    ldm = train_latent_diffusion(tiny_ldm_config(
        out / "ldm", ae, "coarse_to_fine.enabled=true", "unet.in_channels=8",
        "unet.out_channels=2", "train.max_steps=2", "conditioning.drop_prob=0.2",
        "unet.num_classes=11"))
    return ae, ldm


def test_a_coarse_to_fine_model_trains_reloads_and_samples_per_seed(frido):
    from latentdiff.checkpoints import load_latent_diffusion
    from latentdiff.pipelines import generate

    model = load_latent_diffusion(frido[1])
    assert model.num_stages == 2 and model.state_shape == (2, 8, 8)
    assert model.coarse_to_fine.noise_mix == 0.1
    steps = []
    z = generate(model, [3, 4], [1, 2], steps=3, guidance_scale=2.0, decode=False,
                 callback=lambda info: steps.append(info["i"]))
    assert z.shape == (2, 4, 8, 8) and torch.allclose(project(z, 2), z, atol=1e-5)
    assert steps == [0, 1, 2, 3, 4, 5]  # two stages of three steps
    alone = generate(model, [4], [2], steps=3, guidance_scale=2.0, decode=False)
    assert torch.allclose(alone[0], z[1], atol=1e-5)
    images = generate(model, [3], [1], steps=2, sampler="euler_ancestral")
    assert images.shape == (1, 1, 16, 16) and torch.isfinite(images).all()
    assert model.network_cost().latent_shape == (2, 8, 8)


def test_coarse_to_fine_refuses_what_needs_the_whole_latent(frido, tmp_path):
    from latentdiff.checkpoints import load_latent_diffusion
    from latentdiff.pipelines.generate import LatentEdit, generate
    from latentdiff.train.diffusion import train_latent_diffusion
    from conftest import tiny_ldm_config

    from latentdiff.checkpoints.interop.diffusers_folder import save_diffusers

    model = load_latent_diffusion(frido[1])
    with pytest.raises(UserError, match="coarse to fine"):
        generate(model, [0], [1], steps=2, edit=LatentEdit(torch.zeros(1, 4, 8, 8), 0.5))
    with pytest.raises(UserError, match="diffusers has no feature-pyramid autoencoder"):
        save_diffusers(model, tmp_path / "diffusers")
    with pytest.raises(UserError, match="unet.in_channels=8 and unet.out_channels=2"):
        train_latent_diffusion(tiny_ldm_config(tmp_path / "a", frido[0],
                                               "coarse_to_fine.enabled=true",
                                               "unet.in_channels=4", "unet.out_channels=4"))
    with pytest.raises(UserError, match="coarse to fine"):
        train_latent_diffusion(tiny_ldm_config(tmp_path / "b", frido[0], "unet.in_channels=4",
                                               "unet.out_channels=4", "unet.num_classes=11",
                                               "conditioning.drop_prob=0.2",
                                               f"distillation.teacher={frido[1]}"))


def test_coarse_to_fine_needs_a_pyramid_autoencoder(trained_autoencoder, tmp_path):
    from latentdiff.train.diffusion import train_latent_diffusion
    from conftest import tiny_ldm_config

    with pytest.raises(UserError, match="model.pyramid_levels=2"):
        train_latent_diffusion(tiny_ldm_config(tmp_path, trained_autoencoder,
                                               "coarse_to_fine.enabled=true"))
