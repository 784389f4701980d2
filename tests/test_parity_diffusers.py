"""Architecture parity with the peer: at identical configurations the parameter counts agree
exactly."""

import pytest

from latentdiff.autoencoder import AutoencoderKL
from latentdiff.config import AutoencoderConfig, UNetConfig
from latentdiff.unet import UNetModel

diffusers = pytest.importorskip("diffusers")


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("attention", [(1,), (1, 2)])
def test_unet_parameter_count_equals_unet2dmodel(attention):
    ours = UNetModel(UNetConfig(in_channels=4, out_channels=4, model_channels=32,
                                channel_mult=(1, 2, 2),
                                num_res_blocks=2, attention_resolutions=attention,
                                head_channels=32, num_classes=5))
    down = tuple("AttnDownBlock2D" if 2 ** i in attention else "DownBlock2D" for i in range(3))
    up = tuple(b.replace("Down", "Up") for b in reversed(down))
    peer = diffusers.UNet2DModel(in_channels=4, out_channels=4,
                                 block_out_channels=(32, 64, 64), layers_per_block=2,
                                 down_block_types=down, up_block_types=up,
                                 attention_head_dim=32, norm_num_groups=32,
                                 num_class_embeds=5)
    assert count(ours) == count(peer)


def test_autoencoder_parameter_count_equals_autoencoderkl():
    ours = AutoencoderKL(AutoencoderConfig(in_channels=3, base_channels=32,
                                           channel_mult=(1, 2, 2), num_res_blocks=2,
                                           latent_channels=4, resolution=32))
    peer = diffusers.AutoencoderKL(in_channels=3, out_channels=3,
                                   block_out_channels=(32, 64, 64), latent_channels=4,
                                   down_block_types=("DownEncoderBlock2D",) * 3,
                                   up_block_types=("UpDecoderBlock2D",) * 3,
                                   layers_per_block=2, norm_num_groups=32)
    assert count(ours) == count(peer)
