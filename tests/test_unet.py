import math

import pytest
import torch

from latentdiff.config import UNetConfig
from latentdiff.nn.attention import AttentionBlock
from latentdiff.nn.layers import timestep_embedding
from latentdiff.unet import UNetModel

TINY = UNetConfig(in_channels=2, out_channels=2, model_channels=32,
                  channel_mult=(1, 2), num_res_blocks=1,
                  attention_resolutions=(1, 2), head_channels=32)


def test_shapes_and_class_conditioning():
    model = UNetModel(UNetConfig(**{**TINY.__dict__, "num_classes": 3}))
    x, t = torch.randn(4, 2, 8, 8), torch.tensor([0, 10, 500, 999])
    y = torch.tensor([0, 1, 2, 0])
    for p in model.parameters():  # zero-initialised residual outputs would hide the label's effect
        torch.nn.init.normal_(p, std=0.05)
    out = model(x, t, class_labels=y)
    assert out.shape == x.shape
    assert not torch.allclose(out, model(x, t, class_labels=torch.tensor([1, 2, 0, 1])))
    with pytest.raises(ValueError, match="class_labels"):
        model(x, t)
    with pytest.raises(ValueError, match="context must be given exactly"):
        model(x, t, context=torch.randn(4, 3, 16), class_labels=y)


def test_state_dict_mirrors_the_original_key_names():
    model = UNetModel(UNetConfig(**{**TINY.__dict__, "num_classes": 3}))
    keys = set(model.state_dict())
    for key in ["time_embed.0.weight", "time_embed.2.weight", "label_emb.weight",
                "input_blocks.0.0.weight",
                "input_blocks.1.0.in_layers.0.weight", "input_blocks.1.0.emb_layers.1.weight",
                "input_blocks.1.0.out_layers.3.weight", "input_blocks.1.1.qkv.weight",
                "input_blocks.2.0.op.weight",
                "input_blocks.3.0.skip_connection.weight", "middle_block.1.proj_out.weight",
                "output_blocks.1.2.conv.weight", "out.0.weight", "out.2.weight"]:
        assert key in keys, key
    # Conv1d as the original
    assert model.state_dict()["input_blocks.1.1.qkv.weight"].shape == (96, 32, 1)


def _legacy_attention(qkv: torch.Tensor, heads: int) -> torch.Tensor:
    """The original QKVAttentionLegacy, written out with einsum: qkv (B, 3·H·d, T) → (B, H·d, T)."""
    b, width, length = qkv.shape
    d = width // (3 * heads)
    q, k, v = qkv.reshape(b * heads, 3 * d, length).split(d, dim=1)
    scale = 1 / math.sqrt(math.sqrt(d))
    weight = torch.einsum("bct,bcs->bts", q * scale, k * scale).softmax(dim=-1)
    return torch.einsum("bts,bcs->bct", weight, v).reshape(b, -1, length)


def test_attention_block_matches_the_original_head_layout():
    block = AttentionBlock(64, num_heads=2)
    torch.nn.init.normal_(block.proj_out.weight, std=0.1)
    x = torch.randn(2, 64, 3, 5)
    flat = x.reshape(2, 64, -1)
    expected = flat + block.proj_out(_legacy_attention(block.qkv(block.norm(flat)), heads=2))
    torch.testing.assert_close(block(x), expected.reshape(x.shape), rtol=1e-5, atol=1e-5)


def test_timestep_embedding_is_cos_then_sin():
    emb = timestep_embedding(torch.tensor([0.0, 3.0]), 8)
    torch.testing.assert_close(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    freqs = torch.exp(-math.log(10000) * torch.arange(4) / 4)
    torch.testing.assert_close(emb[1], torch.cat([torch.cos(3 * freqs), torch.sin(3 * freqs)]))


def test_coordinate_channels_give_the_unet_absolute_position():
    from latentdiff.unet import coordinate_maps

    maps = coordinate_maps(torch.zeros(2, 4, 4, 8))
    assert maps.shape == (2, 2, 4, 8)
    # x varies along the width
    torch.testing.assert_close(maps[0, 0, 0], torch.linspace(-7 / 8, 7 / 8, 8))
    # y along the height
    torch.testing.assert_close(maps[0, 1, :, 0], torch.linspace(-3 / 4, 3 / 4, 4))
    model = UNetModel(UNetConfig(**{**TINY.__dict__, "coordinate_channels": True}))
    assert model.input_blocks[0][0].in_channels == TINY.in_channels + 2
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    x, t = torch.zeros(1, 2, 8, 8), torch.tensor([500])
    out = model(x, t)
    with torch.no_grad():
        model.input_blocks[0][0].weight[:, TINY.in_channels:] = 0  # cut the coordinate inputs
    assert out.shape == x.shape and not torch.allclose(out, model(x, t))
    # any size: coordinates span [−1, 1]
    assert model(torch.zeros(1, 2, 16, 16), t).shape == (1, 2, 16, 16)


def test_position_features_and_pooled_context_reach_the_output_and_respect_the_mask():
    from latentdiff.nn.layers import fourier_positions

    features = fourier_positions(2, 4, 3)
    assert features.shape == (8, 12)
    x = torch.tensor([-0.75, -0.25, 0.25, 0.75])  # cell centres of 4 columns
    # sin(π·1·x) along the first row
    torch.testing.assert_close(features[:4, 0], torch.sin(torch.pi * x))
    # y = +0.5
    torch.testing.assert_close(features[4:, 6 + 2], torch.sin(3 * torch.pi * torch.full((4,), 0.5)))
    cfg = UNetConfig(in_channels=2, out_channels=2, model_channels=32,
                     channel_mult=(1, 2), num_res_blocks=1,
                     attention_resolutions=(1, 2), head_channels=16, context_dim=8,
                     position_frequencies=4,
                     pooled_context=True)
    model = UNetModel(cfg)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    x, t = torch.randn(1, 2, 8, 8), torch.tensor([300])
    context, mask = torch.randn(1, 5, 8), torch.tensor([[True, True, True, False, False]])
    out = model(x, t, context=context, context_mask=mask)
    padded = context.clone()
    padded[:, 3:] = 100.0  # masked tokens: neither attended to nor pooled
    torch.testing.assert_close(model(x, t, context=padded, context_mask=mask), out)
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "pos_embed"):
                module.pos_embed.weight.zero_()
    # positions were used
    assert not torch.allclose(model(x, t, context=context, context_mask=mask), out)
    assert model(torch.randn(1, 2, 16, 16), t, context=context, context_mask=mask).shape == (1, 2, 16, 16)


def test_resblock_updown_matches_the_published_layouts_and_resamples_inside():
    """LSUN-churches (5 levels, scale-shift norm) and inpainting_big built on the meta device have
    the published parameter counts (295.0 M, 387.2 M) and their resampling ResBlocks where the
    original puts them; a down-block computes conv(avgpool(SiLU(GN(x)))) + emb → out_layers, plus
    avgpool(x)."""
    import torch.nn.functional as F

    from latentdiff.unet import ResBlock

    churches = UNetConfig(in_channels=4, out_channels=4, model_channels=192,
                          channel_mult=(1, 2, 2, 4, 4),
                          num_res_blocks=2, attention_resolutions=(1, 2, 4, 8),
                          num_heads=8, head_channels=-1,
                          use_scale_shift_norm=True, resblock_updown=True)
    inpainting = UNetConfig(in_channels=7, out_channels=3, model_channels=256,
                            channel_mult=(1, 2, 3, 4),
                            num_res_blocks=2, attention_resolutions=(2, 4, 8),
                            num_heads=8, head_channels=-1,
                            resblock_updown=True)
    names = {}
    for cfg, millions in ((churches, 295.0), (inpainting, 387.2)):
        with torch.device("meta"):
            model = UNetModel(cfg)
        assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == millions
        names[millions] = model.state_dict().keys()
    # the resampling ResBlocks of the published LSUN-churches checkpoint
    resampling = [f"input_blocks.{i}.0" for i in (3, 6, 9, 12)] + ["output_blocks.2.1"] + [
        f"output_blocks.{i}.2" for i in (5, 8, 11)]
    assert all(f"{r}.in_layers.2.weight" in names[295.0]
               and f"{r}.skip_connection.weight" not in names[295.0]
               for r in resampling)
    assert not any(".op." in n or ".conv.weight" in n for n in names[295.0])

    block = ResBlock(32, 16, 32, 0.0, False, "down")
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x, emb = torch.randn(2, 32, 8, 8), torch.randn(2, 16)
    h = block.in_layers[2](F.avg_pool2d(F.silu(block.in_layers[0](x)), 2))
    h = h + block.emb_layers(emb)[..., None, None]
    torch.testing.assert_close(block(x, emb), F.avg_pool2d(x, 2) + block.out_layers(h))
    up = ResBlock(32, 16, 32, 0.0, False, "up")
    assert up(x, emb).shape == (2, 32, 16, 16)
