import dataclasses

import pytest
import torch

from latentdiff.autoencoder import AutoencoderKL, DiagonalGaussian, LatentCodec, LatentStats
from latentdiff.autoencoder.losses import generator_loss
from latentdiff.autoencoder.networks import channel_group_average
from latentdiff.config import AutoencoderConfig, AutoencoderLossConfig
from latentdiff.errors import UserError


@pytest.mark.parametrize("channel_mult", [(1,), (1, 1), (1, 1, 1), (1, 1, 1, 1)])
def test_any_power_of_two_factor(channel_mult):
    cfg = AutoencoderConfig(in_channels=3, base_channels=32,
                            channel_mult=channel_mult, num_res_blocks=1,
                            latent_channels=4, resolution=16, attn_resolutions=(16,))
    model = AutoencoderKL(cfg)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    recon, posterior = model(x,
                             torch.randn(2, 4, 16 // cfg.downsampling_factor,
                                         16 // cfg.downsampling_factor))
    assert cfg.downsampling_factor == 2 ** (len(channel_mult) - 1)
    assert posterior.mean.shape == (2, 4, 16 // cfg.downsampling_factor,
                                    16 // cfg.downsampling_factor)
    assert recon.shape == x.shape


def test_state_dict_mirrors_the_original_key_names(tiny_ae_cfg):
    keys = set(AutoencoderKL(tiny_ae_cfg).state_dict())
    for key in ["encoder.conv_in.weight", "encoder.down.0.block.0.norm1.weight",
                "encoder.down.0.downsample.conv.weight",
                "encoder.mid.attn_1.q.weight", "encoder.mid.block_2.conv2.bias",
                "encoder.norm_out.weight",
                "decoder.up.0.block.1.conv1.weight", "decoder.up.1.upsample.conv.weight",
                "decoder.conv_out.weight",
                "quant_conv.weight", "post_quant_conv.weight"]:
        assert key in keys, key
    # level 0 is full resolution: no upsampler
    assert "decoder.up.0.upsample.conv.weight" not in keys
    assert AutoencoderKL(tiny_ae_cfg).state_dict()["encoder.mid.attn_1.q.weight"].shape == (32, 32, 1, 1)


def test_kl_matches_torch_distributions():
    moments = torch.randn(3, 4, 2, 2)
    posterior = DiagonalGaussian(moments)
    q = torch.distributions.Normal(posterior.mean, posterior.std)
    p = torch.distributions.Normal(torch.zeros_like(posterior.mean), torch.ones_like(posterior.std))
    expected = torch.distributions.kl_divergence(q, p).flatten(1).sum(1)
    torch.testing.assert_close(posterior.kl(), expected, rtol=1e-5, atol=1e-5)


def test_loss_terms_are_per_sample_and_weighted():
    x, recon = torch.zeros(2, 1, 4, 4), torch.full((2, 1, 4, 4), 0.5)
    posterior = DiagonalGaussian(torch.cat([torch.ones(2, 1, 2, 2), torch.zeros(2, 1, 2, 2)], 1))
    cfg = AutoencoderLossConfig(l1_weight=2.0, kl_weight=0.5, perceptual="none")
    terms = generator_loss(x, recon, posterior, cfg, perceptual=None)
    torch.testing.assert_close(terms["l1"], torch.full((2,), 0.5))
    # ½·μ² per latent, / 16 pixels
    torch.testing.assert_close(terms["kl"], torch.full((2,), 0.5 * 4 / 16))
    torch.testing.assert_close(terms["loss"], (2.0 * terms["l1"] + 0.5 * terms["kl"]).mean())


def test_codec_scales_latents_to_unit_variance(tiny_ae_cfg):
    model = AutoencoderKL(tiny_ae_cfg).eval()
    x = torch.rand(16, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        z_raw = model.encode(x).mean
    codec = LatentCodec(model, LatentStats.measure(z_raw))
    with torch.no_grad():
        z = codec.encode(x)
        assert abs(z.std().item() - 1.0) < 1e-4
        torch.testing.assert_close(codec.decode(z),
                                   model.decode(z_raw).clamp(-1, 1), rtol=1e-4, atol=1e-4)


def test_channel_group_average_and_its_duplicate_are_inverse_on_group_constant_input():
    average = channel_group_average(32, 3)[:, :, 0, 0]  # (3, 32): 11 + 11 + 10 channels
    torch.testing.assert_close(average.sum(1), torch.ones(3))
    duplicate = (average > 0).float().T  # (32, 3)
    z = torch.randn(5, 3)
    torch.testing.assert_close((duplicate @ z.T).T @ average.T, z)


def test_residual_shortcuts_keep_keys_and_carry_a_parameter_free_path(tiny_ae_cfg):
    cfg = dataclasses.replace(tiny_ae_cfg, residual_shortcuts=True, norm_groups=8)
    plain, shortcut = AutoencoderKL(tiny_ae_cfg), AutoencoderKL(cfg)
    assert plain.state_dict().keys() == shortcut.state_dict().keys()
    # same shapes: original checkpoints load into either
    shortcut.load_state_dict(plain.state_dict())
    with torch.no_grad():  # every weight but conv_in zero: only the shortcuts carry x to the latent
        for name, p in shortcut.named_parameters():
            if not name.startswith("encoder.conv_in"):
                p.zero_()
        x = torch.rand(2, 1, 16, 16)
        h = torch.nn.functional.avg_pool2d(shortcut.encoder.conv_in(x), 2)  # (2, 32, 8, 8)
        expected = torch.nn.functional.conv2d(h, channel_group_average(32, 2))
        out = shortcut.encoder(x)  # (2, 2c, 8, 8): [latent shortcut | log-variance channels]
        torch.testing.assert_close(out[:, :2], expected)
        assert out[:, 2:].abs().max() == 0
        up = shortcut.decoder.up[1].upsample  # Upsample with a zero conv is exact nearest-neighbour
        torch.testing.assert_close(up(h), torch.nn.functional.interpolate(h, scale_factor=2.0))


def test_norm_groups_must_divide_the_widths():
    with pytest.raises(UserError, match="norm_groups"):
        AutoencoderConfig(base_channels=32, channel_mult=(1, 2), norm_groups=5)
