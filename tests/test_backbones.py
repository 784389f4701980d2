"""The transformer backbones (U-ViT, DiT) and ensembles of experts behind the same denoiser: shapes
with every conditioning input, adaLN-Zero's identity start, the fixed positions against the
original formula, FLOPs against a hand count, routing at the interval edges, and training, saving
and loading through the same commands as the UNet."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from conftest import tiny_ldm_config
from latentdiff.checkpoints.models import (initialise_from, load_latent_diffusion,
                                           save_latent_diffusion)
from latentdiff.config import (DiTConfig, LatentDiffusionTrainConfig, NoiseScheduleConfig,
                               UViTConfig, load_config)
from latentdiff.dit import DiT
from latentdiff.errors import UserError
from latentdiff.network import ExpertNetwork, build_network, expert_network, network_cost
from latentdiff.nn.vit import sincos_positions
from latentdiff.noise import NoiseSchedule
from latentdiff.pipelines import generate
from latentdiff.preconditioning import make_preconditioning
from latentdiff.train.diffusion import train_latent_diffusion
from latentdiff.uvit import UViT

TINY_DIT = dict(hidden_size=32, depth=2, num_heads=2)
TINY_UVIT = dict(width=32, depth=3, num_heads=2)


def _inputs(cfg, batch: int = 3, h: int = 8, w: int = 8) -> dict:
    kwargs = {}
    if cfg.num_classes:
        kwargs["class_labels"] = torch.arange(batch) % cfg.num_classes
    if cfg.context_dim:
        kwargs["context"] = torch.randn(batch, 5, cfg.context_dim)
        kwargs["context_mask"] = torch.tensor([[True] * 3 + [False] * 2] * batch)
    if cfg.in_channels > 4:
        kwargs["concat"] = torch.randn(batch, cfg.in_channels - 4, h, w)
    if cfg.guidance_embedding:
        kwargs["guidance"] = torch.full((batch,), 3.0)
    return kwargs


@pytest.mark.parametrize("cfg", [
    DiTConfig(**TINY_DIT, num_classes=11), DiTConfig(**TINY_DIT, context_dim=16, in_channels=6),
    DiTConfig(**TINY_DIT, guidance_embedding=True, learn_sigma=True),
    UViTConfig(**TINY_UVIT, num_classes=11), UViTConfig(**TINY_UVIT, context_dim=16, in_channels=6),
    UViTConfig(**TINY_UVIT, guidance_embedding=True, long_skip=False, final_conv=False),
])
def test_backbones_take_every_conditioning_input(cfg):
    torch.manual_seed(0)
    net = build_network(cfg)
    x, t = torch.randn(3, 4, 8, 8), torch.tensor([0.0, 400.5, 999.0])
    out = net(x, t, **_inputs(cfg))
    assert out.shape == (3, 4, 8, 8) and torch.isfinite(out).all()
    wider = net(torch.randn(1, 4, 8, 12), t[:1], **_inputs(cfg, 1, 8, 12))
    assert wider.shape == (1, 4, 8, 12)  # fixed sin-cos positions: any latent size
    with pytest.raises(ValueError, match="divisible by patch_size"):
        net(torch.randn(1, 4, 7, 8), t[:1], **_inputs(cfg, 1, 7, 8))
    with pytest.raises(ValueError, match="exactly when"):
        net(x, t)


def test_dit_starts_as_identity_blocks_and_a_zero_output():
    torch.manual_seed(0)
    dit = DiT(DiTConfig(**TINY_DIT, num_classes=3, context_dim=8))
    tokens, c = torch.randn(2, 16, 32), torch.randn(2, 32)
    context = torch.randn(2, 4, 8)
    for block in dit.blocks:
        torch.testing.assert_close(block(tokens, c, context), tokens, rtol=0, atol=0)
    out = dit(torch.randn(2, 4, 8, 8), torch.tensor([3.0, 700.0]),
              class_labels=torch.tensor([0, 2]), context=context)
    assert out.abs().max() == 0
    # once the modulation is not zero the block is not the identity
    nn.init.normal_(dit.blocks[0].adaLN_modulation[1].weight)
    assert not torch.allclose(dit.blocks[0](tokens, c, context), tokens)


def test_uvit_long_skips_are_the_ablation_switch():
    with_skips, without = (UViT(UViTConfig(**TINY_UVIT | dict(depth=5), long_skip=s))
                           for s in (True, False))
    skips = [b.skip_linear for b in with_skips.out_blocks]
    assert len(skips) == 2 and all(isinstance(s, nn.Linear) for s in skips)
    assert all(b.skip_linear is None for b in without.out_blocks)
    difference = (sum(p.numel() for p in with_skips.parameters())
                  - sum(p.numel() for p in without.parameters()))
    assert difference == 2 * (2 * 32 * 32 + 32)
    with pytest.raises(UserError, match="must be odd"):
        UViTConfig(depth=4)


def _mae_sincos(dim: int, grid: int) -> np.ndarray:
    """The 2-D sin-cos table as MAE/DiT write it in numpy: meshgrid(w, h), the first half from
    the w grid."""
    def one_d(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)
    gw, gh = np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32))
    return np.concatenate([one_d(dim // 2, gw), one_d(dim // 2, gh)], axis=1)


def test_sincos_positions_are_the_original_table():
    ours = sincos_positions(64, 6, 6)
    torch.testing.assert_close(ours, torch.from_numpy(_mae_sincos(64, 6)).float())


def test_flops_are_the_hand_count_of_a_dit():
    """Multiply-adds ×2 of every linear map, the patch conv and both attention products."""
    cfg = DiTConfig(**TINY_DIT, num_classes=5, frequency_dim=16)
    d, n, p, c, f = 32, 16, 2, 4, 16  # 8×8 latent, 2×2 patches → 16 tokens
    per_block = (2 * n * d * 3 * d + 2 * 2 * n * n * d + 2 * n * d * d
                 + 2 * 2 * n * d * 4 * d + 2 * d * 6 * d)
    total = (2 * n * d * c * p * p + 2 * (f * d + d * d) + cfg.depth * per_block
             + 2 * d * 2 * d + 2 * n * d * p * p * c)
    cost = network_cost(DiT(cfg), (4, 8, 8), class_labels=torch.zeros(1, dtype=torch.long))
    assert cost.gflops * 1e9 == total
    assert cost.parameters == sum(p.numel() for p in DiT(cfg).parameters())


class Constant(nn.Module):
    """A stand-in expert that outputs its index k everywhere."""

    def __init__(self, k: int):
        super().__init__()
        self.k, self.config = k, DiTConfig(**TINY_DIT)
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x, timesteps, **cond):
        assert all(v is None or not torch.is_tensor(v) or v.dim() == 0 or len(v) == len(x)
                   for v in cond.values())
        return torch.full_like(x, float(self.k))


@pytest.mark.parametrize("kind, prediction", [("scaled_linear", "eps"), ("karras", "edm"),
                                              ("flow", "flow")])
def test_experts_route_each_sigma_to_its_interval_edges_included(kind, prediction):
    precond = make_preconditioning(NoiseSchedule(NoiseScheduleConfig(kind=kind)), prediction, 1.0)
    boundaries = (0.5, 2.0)
    edges = precond.c_noise(torch.tensor(boundaries))
    net = ExpertNetwork([Constant(k) for k in range(3)], boundaries, edges)
    sigma = torch.tensor([0.1, 0.5, 0.4999, 1.0, 2.0, 1.999, 30.0])
    expected = torch.tensor([0, 1, 0, 1, 2, 1, 2])
    x = torch.zeros(len(sigma), 1, 2, 2)
    out = net(x, precond.c_noise(sigma), class_labels=torch.arange(len(sigma)), guidance=3.0)
    assert torch.equal(out[:, 0, 0, 0].long(), expected)
    one = net(x[:2], precond.c_noise(torch.tensor([2.0, 2.0])))
    assert (one == 2).all()
    with pytest.raises(UserError, match="increasing"):
        load_config(LatentDiffusionTrainConfig, None, ["autoencoder=x", "experts=[2.0,1.0]"])


def test_expert_network_builds_its_experts_and_costs_one():
    precond = make_preconditioning(NoiseSchedule(NoiseScheduleConfig()), "eps", 1.0)
    cfg = DiTConfig(**TINY_DIT)
    ensemble = expert_network(cfg, (1.0,), precond.c_noise)
    single = build_network(cfg)
    assert len(ensemble.experts) == 2 and ensemble.config == cfg
    assert (network_cost(ensemble, (4, 8, 8)).gflops == network_cost(single, (4, 8, 8)).gflops)
    assert network_cost(ensemble, (4, 8, 8)).parameters == 2 * network_cost(single, (4, 8, 8)).parameters


DIT_RUN = ["backbone=dit", "dit.in_channels=2", "dit.out_channels=2", "dit.hidden_size=32",
           "dit.depth=2", "dit.num_heads=2", "dit.num_classes=10"]
UVIT_RUN = ["backbone=uvit", "uvit.in_channels=2", "uvit.out_channels=2", "uvit.width=32",
            "uvit.depth=3", "uvit.num_heads=2", "uvit.num_classes=10"]


@pytest.mark.parametrize("backbone", [DIT_RUN, UVIT_RUN], ids=["dit", "uvit"])
def test_a_transformer_trains_saves_and_samples_like_the_unet(tmp_path, trained_autoencoder,
                                                               backbone):
    checkpoint = train_latent_diffusion(tiny_ldm_config(tmp_path / "run", trained_autoencoder,
                                                        *backbone, "train.max_steps=3"))
    model = load_latent_diffusion(checkpoint)
    assert type(model.unet) is (DiT if "backbone=dit" in backbone else UViT)
    assert model.size_multiple == 2 * 2
    images = generate(model, seeds=[1, 2], class_labels=[3, 4], steps=2)
    assert images.shape == (2, 1, 16, 16)
    cost = model.network_cost()
    assert cost.gflops > 0 and cost.latent_shape == (2, 8, 8)
    copy = load_latent_diffusion(save_latent_diffusion(model, tmp_path / "copy.safetensors"))
    torch.testing.assert_close(generate(copy, seeds=[1], class_labels=[3], steps=2), images[:1])
    with pytest.raises(UserError, match="the network config changed"):
        train_latent_diffusion(tiny_ldm_config(tmp_path / "run", trained_autoencoder, *backbone,
                                               "train.max_steps=4", f"{backbone[1].split('.')[0]}"
                                               ".num_heads=4"), resume=True)


def test_experts_branch_from_a_base_and_train_on_their_intervals(tmp_path, trained_autoencoder):
    base = train_latent_diffusion(tiny_ldm_config(tmp_path / "base", trained_autoencoder,
                                                  *DIT_RUN, "train.max_steps=2"))
    base_model = load_latent_diffusion(base)
    precond = base_model.denoiser.precond
    expert_model = dataclasses.replace(base_model, unet=expert_network(
        base_model.unet.config, (1.0, 5.0), precond.c_noise))
    initialise_from(base, expert_model.unet, None)
    assert isinstance(expert_model.unet, ExpertNetwork) and len(expert_model.unet.experts) == 3
    for expert in expert_model.unet.experts:  # each starts as the base
        for a, b in zip(expert.state_dict().values(), base_model.unet.state_dict().values()):
            torch.testing.assert_close(a, b)
    torch.testing.assert_close(generate(expert_model, seeds=[0], class_labels=[1], steps=3),
                               generate(base_model, seeds=[0], class_labels=[1], steps=3))
    trained = load_latent_diffusion(train_latent_diffusion(tiny_ldm_config(
        tmp_path / "trained", trained_autoencoder, *DIT_RUN, "experts=[1.0,5.0]",
        f"init_from={base}", "train.max_steps=3")), use_ema=False)
    changed = [not all(torch.equal(a, b) for a, b in zip(e.state_dict().values(),
                                                         base_model.unet.state_dict().values()))
               for e in trained.unet.experts]
    assert any(changed)
    with pytest.raises(UserError, match="experts train in one process"):
        tiny_ldm_config(tmp_path / "ddp", trained_autoencoder, "experts=[1.0]", "train.devices=2")
    with pytest.raises(UserError, match="holds another network"):
        train_latent_diffusion(tiny_ldm_config(tmp_path / "bad", trained_autoencoder, *DIT_RUN,
                                               "dit.depth=3", f"init_from={base}",
                                               "train.max_steps=1"))


def test_learned_sigma_is_for_loading_only(tmp_path, trained_autoencoder):
    with pytest.raises(UserError, match="learn_sigma is for loading"):
        train_latent_diffusion(tiny_ldm_config(tmp_path, trained_autoencoder, *DIT_RUN,
                                               "dit.learn_sigma=true", "train.max_steps=1"))
    assert math.isclose(DiTConfig.of_size("XL").hidden_size, 1152)


def test_checkpoints_from_before_the_backbones_compare_with_the_new_defaults():
    """Metadata written before `backbone` and the newer UNet fields existed reads as today's UNet."""
    from latentdiff.config import UNetConfig, to_dict
    from latentdiff.network import network_fields, network_metadata

    old = {k: v for k, v in to_dict(UNetConfig()).items() if k != "wavelet_gates"}
    assert network_fields({"unet_config": old}) == network_fields(
        network_metadata(build_network(UNetConfig())))


def test_adapter_students_of_a_transformer_name_its_modules():
    from latentdiff.checkpoints.models import student_unet
    from latentdiff.config import LoRAConfig

    teacher = DiT(DiTConfig(**TINY_DIT))
    with pytest.raises(UserError, match="name no layer.*x_embedder, t_embedder, guidance_proj, blocks"):
        student_unet(teacher, True, LoRAConfig(rank=2))
    student = student_unet(teacher, True, LoRAConfig(rank=2, prefixes=("blocks",)))
    trained = [n for n, p in student.named_parameters() if p.requires_grad]
    assert trained and all(n.startswith(("blocks.", "guidance_proj")) for n in trained)
