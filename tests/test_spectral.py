"""Spectral Diffusion's parts: the Haar DWT/IDWT pair, timestep-gated wavelet resampling in the
UNet, spectrum-aware distillation, and the radially averaged power spectrum."""

import math

import pytest
import torch

from conftest import tiny_ldm_config
from latentdiff.checkpoints.models import load_latent_diffusion
from latentdiff.config import NoiseScheduleConfig, UNetConfig
from latentdiff.denoiser import Denoiser
from latentdiff.errors import UserError
from latentdiff.metrics.spectrum import high_frequency_share, radial_power_spectrum
from latentdiff.network import network_cost
from latentdiff.nn.wavelets import WaveletDownsample, WaveletUpsample, haar_dwt, haar_idwt
from latentdiff.noise import NoiseSchedule
from latentdiff.objectives import Teacher, denoising_loss, spectral_distillation
from latentdiff.preconditioning import make_preconditioning
from latentdiff.train.diffusion import train_latent_diffusion
from latentdiff.unet import UNetModel


def test_haar_dwt_and_idwt_are_an_exact_orthonormal_pair():
    x = torch.randn(2, 3, 8, 6, dtype=torch.float64)
    bands = haar_dwt(x)
    assert bands.shape == (2, 4, 3, 4, 3)
    torch.testing.assert_close(haar_idwt(bands), x, rtol=0, atol=1e-12)
    torch.testing.assert_close(bands.pow(2).sum(), x.pow(2).sum())  # energy preserved
    flat = torch.ones(1, 1, 4, 4)
    assert torch.equal(haar_dwt(flat)[0, :, 0], torch.stack([torch.full((2, 2), 2.0)]
                                                             + [torch.zeros(2, 2)] * 3))
    stripes = torch.tensor([[1.0, -1.0] * 2] * 4)[None, None]  # alternating columns
    assert haar_dwt(stripes)[0, 1].abs().min() == 2 and haar_dwt(stripes)[0, [0, 2, 3]].abs().max() == 0


def test_wavelet_gates_depend_on_the_timestep_and_start_near_plain_resampling():
    torch.manual_seed(0)
    down, up = WaveletDownsample(4, 8), WaveletUpsample(4, 8)
    x = torch.randn(2, 4, 8, 8)
    emb = torch.randn(2, 8)
    g = down.gates(haar_dwt(x).mean(dim=(-2, -1)), emb)
    torch.testing.assert_close(g[:, 0], torch.full_like(g[:, 0], 0.9), atol=1e-4, rtol=0)
    torch.testing.assert_close(g[:, 1:], torch.full_like(g[:, 1:], 0.1), atol=1e-4, rtol=0)
    torch.nn.init.normal_(down.gates.proj.weight)
    torch.nn.init.normal_(up.gates.proj.weight)
    for layer, shape in ((down, (2, 4, 4, 4)), (up, (2, 4, 16, 16))):
        a, b = layer(x, emb), layer(x, emb.flip(0) * 3)
        assert a.shape == shape and not torch.allclose(a, b)


def test_without_resampling_convs_the_gated_subbands_are_the_output():
    torch.manual_seed(0)
    down, up = WaveletDownsample(4, 8, conv=False), WaveletUpsample(4, 8, conv=False)
    assert not any(isinstance(m, torch.nn.Conv2d) for m in (*down.modules(), *up.modules()))
    x, emb = torch.randn(2, 4, 8, 8), torch.randn(2, 8)
    bands = haar_dwt(x)  # at initialisation the gates are 0.9 (LL) and 0.1 (details)
    expected = 0.9 * bands[:, 0] + 0.1 * bands[:, 1:].sum(1)
    torch.testing.assert_close(down(x, emb), expected, atol=1e-4, rtol=1e-4)
    gains = torch.tensor([0.9, 0.1, 0.1, 0.1]).view(1, 4, 1, 1, 1)
    torch.testing.assert_close(up(x, emb), haar_idwt(gains * x[:, None]), atol=1e-4, rtol=1e-4)
    cfg = UNetConfig(in_channels=2, out_channels=2, model_channels=32, channel_mult=(1, 2),
                     num_res_blocks=1, attention_resolutions=(), wavelet_gates=True)
    with_convs = UNetModel(cfg)
    without = UNetModel(UNetConfig(**{**cfg.__dict__, "conv_resample": False}))
    assert network_cost(without, (2, 8, 8)).gflops < network_cost(with_convs, (2, 8, 8)).gflops


def test_a_wavelet_gated_unet_is_a_unet_option():
    cfg = UNetConfig(in_channels=2, out_channels=2, model_channels=32, channel_mult=(1, 2),
                     num_res_blocks=1, attention_resolutions=(2,), wavelet_gates=True)
    unet = UNetModel(cfg)
    assert sum(isinstance(m, WaveletDownsample) for m in unet.modules()) == 1
    assert sum(isinstance(m, WaveletUpsample) for m in unet.modules()) == 1
    out = unet(torch.randn(2, 2, 8, 8), torch.tensor([1.0, 900.0]))
    assert out.shape == (2, 2, 8, 8)
    plain = UNetModel(UNetConfig(**{**cfg.__dict__, "wavelet_gates": False}))
    assert network_cost(unet, (2, 8, 8)).gflops != network_cost(plain, (2, 8, 8)).gflops
    with pytest.raises(UserError, match="choose one"):
        UNetConfig(wavelet_gates=True, resblock_updown=True)


class Linear(torch.nn.Module):
    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def forward(self, x, t, **cond):
        return self.scale * x


def _denoiser(scale: float) -> Denoiser:
    precond = make_preconditioning(NoiseSchedule(NoiseScheduleConfig()), "eps", 1.0)
    return Denoiser(Linear(scale), precond)


def test_spectral_distillation_is_the_mse_at_alpha_zero_and_lifts_weak_frequencies():
    torch.manual_seed(0)
    x, sigma = torch.randn(3, 2, 8, 8), torch.tensor([0.5, 2.0, 9.0])
    teacher = _denoiser(0.5)
    output = torch.randn(3, 2, 8, 8)
    target = teacher.network_output(x, sigma)
    plain = spectral_distillation(output, teacher, x, sigma, None, alpha=0.0)
    torch.testing.assert_close(plain, (output - target).pow(2).flatten(1).mean(1))
    # a difference at the frequency where the teacher's x̂₀ is weak costs more at alpha = 1
    smooth = torch.ones(1, 1, 8, 8) + 0.01 * torch.randn(1, 1, 8, 8)
    teacher_x = smooth.expand(1, 2, 8, 8).clone()
    wave = torch.cos(math.pi * torch.arange(8.0))[None, :].expand(8, 8)[None, None].expand(1, 2, 8, 8)
    base = teacher.network_output(teacher_x, sigma[:1])
    low = spectral_distillation(base + 0.1, teacher, teacher_x, sigma[:1], None, 1.0)
    high = spectral_distillation(base + 0.1 * wave, teacher, teacher_x, sigma[:1], None, 1.0)
    assert high > 10 * low
    with_teacher = denoising_loss(_denoiser(0.5), x, sigma, torch.randn_like(x), None, None,
                                  Teacher(teacher, weight=2.0, alpha=1.0))
    alone = denoising_loss(_denoiser(0.5), x, sigma, torch.randn_like(x))
    assert with_teacher.shape == alone.shape == (3,)


def test_radial_power_spectrum_finds_the_frequency_of_a_wave():
    image = torch.cos(2 * math.pi * 4 * torch.arange(16.0) / 16)[None, :].expand(16, 16)
    spectrum = radial_power_spectrum(image[None, None])
    assert spectrum.shape == (9,) and int(spectrum.argmax()) == 4
    noise = torch.randn(64, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    blurred = torch.nn.functional.avg_pool2d(noise, 3, 1, 1)
    assert high_frequency_share(noise) > 2 * high_frequency_share(blurred)
    # white noise: the share is the disc's area share above the cutoff, about 1 − 0.5²
    assert abs(high_frequency_share(noise) - 0.75) < 0.08


def test_a_slim_student_distils_from_its_teacher(tmp_path, trained_autoencoder):
    teacher = train_latent_diffusion(tiny_ldm_config(tmp_path / "teacher", trained_autoencoder,
                                                     "train.max_steps=2"))
    student = train_latent_diffusion(tiny_ldm_config(
        tmp_path / "student", trained_autoencoder, "unet.wavelet_gates=true",
        f"distillation.teacher={teacher}", "train.max_steps=2"))
    assert (load_latent_diffusion(student).codec.stats
            == load_latent_diffusion(teacher).codec.stats)
    with pytest.raises(UserError, match="another noise schedule"):
        train_latent_diffusion(tiny_ldm_config(tmp_path / "bad", trained_autoencoder,
                                               "diffusion.prediction=v",
                                               f"distillation.teacher={teacher}",
                                               "train.max_steps=1"))
