import dataclasses
import math

import pytest
import torch

from latentdiff.config import UNetConfig
from latentdiff.nn.transformer import CrossAttention, SpatialTransformer
from latentdiff.unet import UNetModel


def test_cross_attention_is_softmax_qk_v_per_head():
    torch.manual_seed(0)
    attn = CrossAttention(query_dim=8, context_dim=6, num_heads=2, head_dim=4)
    x, c = torch.randn(3, 5, 8), torch.randn(3, 7, 6)
    q, k, v = attn.to_q(x), attn.to_k(c), attn.to_v(c)  # (B, N|M, 8)
    heads = []
    for h in range(2):
        s = slice(4 * h, 4 * h + 4)
        # (B, N, M)
        weights = torch.softmax(q[..., s] @ k[..., s].transpose(1, 2) / math.sqrt(4), dim=-1)
        heads.append(weights @ v[..., s])
    expected = attn.to_out(torch.cat(heads, -1))
    torch.testing.assert_close(attn(x, c), expected, rtol=1e-5, atol=1e-5)


def test_masked_context_tokens_are_ignored():
    torch.manual_seed(0)
    attn = CrossAttention(query_dim=8, context_dim=6, num_heads=2, head_dim=4)
    x, c = torch.randn(2, 5, 8), torch.randn(2, 7, 6)
    mask = torch.tensor([[True] * 4 + [False] * 3, [True] * 7])
    changed = c.clone()
    changed[0, 4:] = 100.0  # padding of the first sample
    torch.testing.assert_close(attn(x, c, mask), attn(x, changed, mask))
    torch.testing.assert_close(attn(x[:1], c[:1, :4]), attn(x, c, mask)[:1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("linear", [False, True])
def test_spatial_transformer_starts_as_identity_and_mirrors_original_keys(linear):
    block = SpatialTransformer(64, num_heads=2, head_dim=16, depth=2, context_dim=12,
                               linear_projection=linear)
    x, c = torch.randn(2, 64, 4, 4), torch.randn(2, 3, 12)
    torch.testing.assert_close(block(x, c), x)  # proj_out is zero-initialised
    keys = set(block.state_dict())
    for key in ["norm.weight", "proj_in.weight", "proj_out.weight",
                "transformer_blocks.1.attn1.to_q.weight",
                "transformer_blocks.0.attn2.to_k.weight",
                "transformer_blocks.0.attn2.to_out.0.bias",
                "transformer_blocks.0.ff.net.0.proj.weight", "transformer_blocks.0.ff.net.2.weight",
                "transformer_blocks.0.norm3.weight"]:
        assert key in keys, key
    assert "transformer_blocks.0.attn2.to_k.bias" not in keys
    assert block.state_dict()["transformer_blocks.0.attn2.to_k.weight"].shape == (32, 12)
    assert block.state_dict()["proj_in.weight"].ndim == (2 if linear else 4)


@pytest.fixture
def text_unet_cfg():
    return UNetConfig(in_channels=4, out_channels=4, model_channels=32,
                      channel_mult=(1, 2), num_res_blocks=1,
                      attention_resolutions=(1, 2), head_channels=16, context_dim=12)


def test_unet_reads_the_context_through_cross_attention(text_unet_cfg):
    torch.manual_seed(0)
    net = UNetModel(text_unet_cfg)
    for module in net.modules():  # leave the zero-initialised start so the context can matter
        if isinstance(module, SpatialTransformer):
            torch.nn.init.normal_(module.proj_out.weight, std=0.1)
    torch.nn.init.normal_(net.out[-1].weight, std=0.1)
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([10, 500])
    c1, c2 = torch.randn(2, 5, 12), torch.randn(2, 5, 12)
    out = net(x, t, context=c1)
    assert out.shape == x.shape
    assert (out - net(x, t, context=c2)).abs().max() > 1e-4
    assert "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight" in net.state_dict()
    assert "middle_block.1.proj_in.weight" in net.state_dict()


def test_unet_conditioning_errors(text_unet_cfg):
    net = UNetModel(text_unet_cfg)
    x, t = torch.randn(1, 4, 8, 8), torch.tensor([3])
    with pytest.raises(ValueError, match="context must be given"):
        net(x, t)
    with pytest.raises(ValueError, match="context_dim=12"):
        net(x, t, context=torch.randn(1, 5, 7))


def test_unet_concatenates_spatial_inputs(text_unet_cfg):
    cfg = dataclasses.replace(text_unet_cfg, in_channels=4 + 3, context_dim=None)
    net = UNetModel(cfg)
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([1, 2])
    assert net(x, t, concat=torch.randn(2, 3, 8, 8)).shape == (2, 7, 8, 8)[:1] + (4, 8, 8)
    with pytest.raises(ValueError, match="7 input channels"):
        net(x, t)
