"""DiT checkpoints load into latentdiff's DiT: diffusers' DiTTransformer2DModel folders with parity
to diffusers itself (small random-weight models), DiTPipeline folders as whole systems, and the
original DiT checkpoint layout."""

import argparse

import pytest
import torch

from latentdiff.checkpoints import load_model
from latentdiff.checkpoints.interop.dit import load_diffusers_dit, load_original_dit
from latentdiff.config import DiTConfig
from latentdiff.dit import DiT
from latentdiff.errors import UserError

diffusers = pytest.importorskip("diffusers")

SMALL = dict(num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=8,
             num_layers=2, sample_size=8, patch_size=2, num_embeds_ada_norm=10)


def _diffusers_dit(tie: bool = True):
    """A small DiTTransformer2DModel with every weight random (adaLN and the output layers
    included), its per-block embedders tied to block 0's as diffusers' conversion writes them."""
    torch.manual_seed(0)
    model = diffusers.DiTTransformer2DModel(**SMALL).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
        if tie:
            first = model.transformer_blocks[0].norm1.emb.state_dict()
            for block in model.transformer_blocks[1:]:
                block.norm1.emb.load_state_dict(first)
    return model


def _inputs():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, 8, 8, generator=g)
    return x, torch.tensor([0.0, 321.0, 999.0]), torch.tensor([1, 7, 10])


def test_diffusers_dit_folder_gives_diffusers_output(tmp_path):
    model = _diffusers_dit()
    model.save_pretrained(tmp_path / "transformer")
    ours = load_diffusers_dit(tmp_path / "transformer")
    assert ours.config.learn_sigma and ours.config.num_classes == 11
    x, t, y = _inputs()
    with torch.no_grad():
        expected = model(x, timestep=t, class_labels=y).sample
        got = ours(x, t, class_labels=y)
    assert got.shape == (3, 4, 8, 8) and expected.abs().mean() > 0.1
    torch.testing.assert_close(got, expected[:, :4], atol=1e-5, rtol=1e-5)


def test_untied_per_block_embedders_are_refused(tmp_path):
    _diffusers_dit(tie=False).save_pretrained(tmp_path / "transformer")
    with pytest.raises(UserError, match="block 1's timestep/class embedder differs"):
        load_diffusers_dit(tmp_path / "transformer")


def test_dit_pipeline_folder_loads_as_a_class_conditional_system(tmp_path):
    vae = diffusers.AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4,
                                  block_out_channels=(32, 32), layers_per_block=1,
                                  down_block_types=("DownEncoderBlock2D",) * 2,
                                  up_block_types=("UpDecoderBlock2D",) * 2, sample_size=16)
    scheduler = diffusers.DDIMScheduler(beta_schedule="linear")
    pipe = diffusers.DiTPipeline(transformer=_diffusers_dit(), vae=vae, scheduler=scheduler)
    pipe.save_pretrained(tmp_path / "dit")
    model = load_model(tmp_path / "dit")
    assert isinstance(model.unet, DiT) and model.trained_with_null and model.num_classes == 11
    assert model.image_size == 16 and model.latent_shape == (4, 8, 8)
    x, t, y = _inputs()
    with torch.no_grad():
        expected = pipe.transformer(x, timestep=t, class_labels=y).sample[:, :4]
    torch.testing.assert_close(model.unet(x, t, class_labels=y), expected, atol=1e-5, rtol=1e-5)


def _original_layout(dit: DiT, grid: int) -> dict:
    """What the original code's state_dict holds: latentdiff's names plus the fixed pos_embed."""
    from test_backbones import _mae_sincos

    state = dict(dit.state_dict())
    state["pos_embed"] = torch.from_numpy(_mae_sincos(dit.config.hidden_size, grid)).float()[None]
    return state


def test_original_dit_checkpoints_load_by_name(tmp_path):
    torch.manual_seed(0)
    source = DiT(DiTConfig(hidden_size=384, depth=1, num_heads=6, num_classes=11,
                           learn_sigma=True, patch_size=2))
    with torch.no_grad():
        for p in source.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    released = tmp_path / "DiT-S-2.pt"
    torch.save(_original_layout(source, 4), released)
    training = tmp_path / "0000100.pt"
    torch.save({"model": {k: v * 0 for k, v in _original_layout(source, 4).items()},
                "ema": _original_layout(source, 4), "opt": {},
                "args": argparse.Namespace(model="DiT-S/2")}, training)
    x, t, y = _inputs()
    expected = source(x, t, class_labels=y)
    for path in (released, training):
        loaded = load_original_dit(path)
        assert loaded.config.num_heads == 6 and loaded.config.learn_sigma
        torch.testing.assert_close(loaded(x, t, class_labels=y), expected)
    assert load_original_dit(training, use_ema=False)(x, t, class_labels=y).abs().max() == 0


def test_an_original_dit_of_unknown_width_needs_its_heads(tmp_path):
    dit = DiT(DiTConfig(hidden_size=32, depth=1, num_heads=2, num_classes=3))
    path = tmp_path / "custom.pt"
    torch.save(dit.state_dict(), path)
    with pytest.raises(UserError, match="give its head count"):
        load_original_dit(path)
    assert load_original_dit(path, num_heads=2).config == dit.config
    torch.save({"foo": torch.zeros(1)}, tmp_path / "foo.pt")
    with pytest.raises(UserError, match="not a DiT checkpoint"):
        load_original_dit(tmp_path / "foo.pt")
