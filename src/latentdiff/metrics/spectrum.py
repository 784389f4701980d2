"""Where images put their energy across spatial frequencies: the radially averaged power spectrum
and the share of energy at high frequencies, to compare generated images with real ones (a slim
denoiser's samples lose high frequencies first; Yang et al. 2023, Sec. 3)."""

import torch


def radial_power_spectrum(images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) float images → (R,) with R = min(H, W)//2 + 1: the power |FFT|² of each
    channel (orthonormal, the channel's mean removed), averaged over the rings of integer radius
    r = round(√(u² + v²)) in cycles per image (r = 0 … Nyquist), then over images and channels."""
    h, w = images.shape[-2:]
    x = images.double() - images.double().mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.fft2(x, norm="ortho").abs().pow(2).mean(dim=(0, 1))  # (H, W)
    u = torch.fft.fftfreq(h, 1 / h, dtype=torch.float64)[:, None]
    v = torch.fft.fftfreq(w, 1 / w, dtype=torch.float64)[None, :]
    radius = torch.sqrt(u ** 2 + v ** 2).round().long()
    rings = min(h, w) // 2 + 1
    inside = radius < rings
    total = torch.zeros(rings, dtype=torch.float64).index_add_(0, radius[inside], power[inside])
    count = torch.zeros(rings, dtype=torch.float64).index_add_(
        0, radius[inside], torch.ones_like(power[inside]))
    return (total / count.clamp_min(1)).float()


def high_frequency_share(images: torch.Tensor, cutoff: float = 0.5) -> float:
    """The fraction of the images' spectral energy (the mean removed) at radii ≥ cutoff·Nyquist of
    the ring average, with every ring weighted by its circumference (2πr), i.e. of the energy in the
    disc up to Nyquist."""
    spectrum = radial_power_spectrum(images).double()
    radii = torch.arange(len(spectrum), dtype=torch.float64)
    energy = spectrum * radii  # ∝ the ring's power × its circumference; r = 0 is the removed mean
    nyquist = len(spectrum) - 1
    return float(energy[radii >= cutoff * nyquist].sum() / energy.sum())
