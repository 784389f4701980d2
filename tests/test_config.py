import pytest

from latentdiff.config import (AutoencoderTrainConfig, LatentDiffusionTrainConfig, UNetConfig,
                               from_dict, load_config,
                               resolve_config_path, to_dict)
from latentdiff.errors import UserError


def test_bundled_configs_load_and_round_trip():
    ae = load_config(AutoencoderTrainConfig, "ae-kl-f4-digits")
    assert ae.model.downsampling_factor == 4 and ae.model.channel_mult == (1, 1, 2)
    ldm = load_config(LatentDiffusionTrainConfig, "ldm-digits", ["train.max_steps=7"])
    assert ldm.train.max_steps == 7 and ldm.unet.num_classes == 10
    assert from_dict(LatentDiffusionTrainConfig, to_dict(ldm)) == ldm


def test_unknown_key_names_the_key_and_the_valid_ones(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  chanel_mult: [1, 2]\n")
    with pytest.raises(UserError, match=r"unknown config key 'model.chanel_mult'.*channel_mult"):
        load_config(AutoencoderTrainConfig, path)


def test_wrong_type_and_missing_required_value():
    with pytest.raises(UserError, match="train.max_steps"):
        load_config(AutoencoderTrainConfig, None, ["train.max_steps=many"])
    with pytest.raises(UserError, match="'autoencoder' is required"):
        load_config(LatentDiffusionTrainConfig, None, [])


def test_invalid_values_are_user_errors():
    with pytest.raises(UserError, match="exactly one of num_heads / head_channels"):
        UNetConfig(num_heads=4, head_channels=32)
    with pytest.raises(UserError, match="divisible by devices"):
        load_config(AutoencoderTrainConfig, None, ["train.batch_size=3", "train.devices=2"])
    with pytest.raises(UserError, match="schedule.kind"):
        load_config(LatentDiffusionTrainConfig, None,
                    ["autoencoder=x", "diffusion.schedule.kind=quadratic"])
    with pytest.raises(UserError, match="train.strategy=fsdp is not supported yet"):
        load_config(AutoencoderTrainConfig, None, ["train.strategy=fsdp"])


def test_unknown_config_name_lists_bundled_ones():
    with pytest.raises(UserError, match="ldm-digits"):
        resolve_config_path("no-such-config")
