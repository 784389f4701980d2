"""The first-stage loss terms (paper Sec. 3.1): SSIM against scikit-image, the focal frequency loss,
LPIPS loaded from the weight layouts in circulation (and refused from wrong ones), PatchGAN sizes,
hinge, R1, the adaptive weight."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from latentdiff.autoencoder import AutoencoderKL
from latentdiff.autoencoder.discriminator import PatchDiscriminator, hinge_d_loss, r1_penalty
from latentdiff.autoencoder.losses import adaptive_weight, discriminator_loss, generator_loss
from latentdiff.autoencoder.perceptual import LPIPS, focal_frequency_loss, load_lpips, ssim
from latentdiff.config import AutoencoderLossConfig
from latentdiff.errors import UserError


def test_ssim_matches_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    torch.manual_seed(0)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    y = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1)
    expected = metrics.structural_similarity(x[0].numpy(), y[0].numpy(),
                                             channel_axis=0, data_range=2.0,
                                             gaussian_weights=True, sigma=1.5,
                                             use_sample_covariance=False)
    assert ssim(x, y).item() == pytest.approx(expected, abs=2e-3)
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-5)


def test_focal_frequency_loss_is_zero_only_for_equal_images():
    x = torch.rand(2, 3, 16, 16)
    assert focal_frequency_loss(x, x).abs().max() < 1e-10
    assert (focal_frequency_loss(x, x.flip(-1)) > 0).all()


def _random_lpips_layouts(tmp_path):
    """The same random weights written as (a) torchvision VGG16 + LPIPS linear layers, (b) one file
    with the `loss.perceptual_loss.*` names of an original autoencoder checkpoint (as .pth)."""
    torch.manual_seed(0)
    model = LPIPS()
    for p in model.parameters():
        p.data.normal_(0, 0.05).abs_()
    state = model.state_dict()
    lin = {k: v for k, v in state.items() if k.startswith("lin")}
    features = {}
    for k, v in state.items():
        if k.startswith("net."):
            index = k.split(".")[2]
            features[f"features.{index}.{k.split('.')[-1]}"] = v
    save_file(lin, tmp_path / "lpips_lin.safetensors")
    save_file(features, tmp_path / "vgg16.safetensors")
    torch.save({"state_dict": {f"loss.perceptual_loss.{k}": v for k, v in state.items()}},
               tmp_path / "ae.pth")
    return model


def test_lpips_loads_every_layout_and_measures_distance(tmp_path):
    reference = _random_lpips_layouts(tmp_path)
    split = load_lpips(tmp_path / "lpips_lin.safetensors", tmp_path / "vgg16.safetensors")
    combined = load_lpips(tmp_path / "ae.pth")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    y = x.flip(-1)
    for model in (split, combined):
        torch.testing.assert_close(model(x, y), reference(x, y))
        assert model(x, x).abs().max() < 1e-6 and (model(x, y) > 0).all()


def test_lpips_refuses_wrong_or_corrupt_files(tmp_path):
    _random_lpips_layouts(tmp_path)
    with pytest.raises(UserError, match="give the torchvision VGG16 weights"):
        load_lpips(tmp_path / "lpips_lin.safetensors")  # linear layers alone
    save_file({"features.0.weight": torch.zeros(64, 3, 5, 5), "features.0.bias": torch.zeros(64)},
              tmp_path / "alexnet_like.safetensors")
    with pytest.raises(UserError, match="not LPIPS-VGG16"):
        load_lpips(tmp_path / "alexnet_like.safetensors", tmp_path / "alexnet_like.safetensors")
    bad_vgg = load_file(tmp_path / "vgg16.safetensors")
    bad_vgg["features.0.weight"] = torch.zeros(64, 3, 5, 5)
    save_file(bad_vgg, tmp_path / "bad_vgg.safetensors")
    with pytest.raises(UserError, match="shape"):
        load_lpips(tmp_path / "lpips_lin.safetensors", tmp_path / "bad_vgg.safetensors")
    (tmp_path / "corrupt.safetensors").write_bytes((tmp_path / "vgg16.safetensors").read_bytes()[:1000])
    with pytest.raises(UserError, match="cannot read weights"):
        load_lpips(tmp_path / "corrupt.safetensors")
    with pytest.raises(UserError, match="does not exist"):
        load_lpips(tmp_path / "missing.pth")


def test_lpips_loss_config_requires_weights():
    with pytest.raises(UserError, match="lpips_weights"):
        AutoencoderLossConfig(perceptual="lpips")


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_patch_discriminator_size_check(layers):
    d = PatchDiscriminator(3, 8, layers).eval()
    for size in (8, 16, 32, 64):
        fits = PatchDiscriminator.logit_size(size, layers) >= 1
        if fits:
            assert d(torch.zeros(1, 3, size, size)).shape[-1] == PatchDiscriminator.logit_size(size, layers)
        else:
            with pytest.raises(UserError, match="too small"):
                d.check_input(size)


def test_hinge_and_r1_closed_forms():
    torch.testing.assert_close(hinge_d_loss(torch.tensor([[2.0]]), torch.tensor([[-2.0]])),
                               torch.tensor([0.0]))
    torch.testing.assert_close(hinge_d_loss(torch.tensor([[0.0]]), torch.tensor([[0.0]])),
                               torch.tensor([1.0]))
    w = torch.tensor([[1.0, -2.0, 3.0]])
    x = torch.randn(4, 3, requires_grad=True)
    torch.testing.assert_close(r1_penalty(x @ w.T, x), torch.full((4,), 0.5 * 14.0))  # ½‖w‖²


def test_adaptive_weight_is_the_gradient_norm_ratio():
    layer = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    rec, adv = (layer ** 2).sum(), 3 * layer.sum()  # ∇rec = 2·layer = (2, 4), ∇adv = (3, 3)
    expected = torch.tensor(20.0).sqrt() / (torch.tensor(18.0).sqrt() + 1e-4)
    torch.testing.assert_close(adaptive_weight(rec, adv, layer), expected)


def test_generator_and_discriminator_steps_with_every_option(tiny_ae_cfg):
    torch.manual_seed(0)
    model = AutoencoderKL(tiny_ae_cfg)
    disc = PatchDiscriminator(1, 8, 1)
    cfg = AutoencoderLossConfig(perceptual="ssim", r1_weight=1.0, feature_matching_weight=0.5)
    x = torch.rand(4, 1, 16, 16) * 2 - 1
    recon, posterior = model(x, torch.randn(4, 2, 8, 8))
    g = generator_loss(x, recon, posterior, cfg, lambda a, b: 1 - ssim(a, b), disc,
                       model.decoder.conv_out.weight)
    assert {"l1", "perceptual", "kl", "adv", "adv_weight", "feature_matching", "loss"} <= g.keys()
    g["loss"].backward()
    assert model.decoder.conv_out.weight.grad.abs().max() > 0
    d = discriminator_loss(disc, x, recon, cfg)
    assert {"d_hinge", "r1", "loss"} <= d.keys() and torch.isfinite(d["loss"])
    d["loss"].backward()
    assert disc.main[0].weight.grad.abs().max() > 0
