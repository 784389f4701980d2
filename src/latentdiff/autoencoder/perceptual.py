"""Perceptual terms of the first-stage loss (paper Sec. 3.1, L_rec) and reconstruction metrics that
share their code.

- LPIPS (Zhang et al. 2018) over VGG16 features: needs ImageNet-pretrained weights, which cannot be
  downloaded here, so it loads user-supplied files (see `load_lpips`). Module names follow
  taming/CompVis (`net.slice1.0.weight`, `lin0.model.1.weight`), so the `loss.perceptual_loss.*`
  tensors of an original autoencoder checkpoint load as is.
- SSIM (Wang et al. 2004) with a Gaussian window; 1 − SSIM is an offline perceptual loss.
- The focal frequency loss (Jiang et al. 2021): squared spectrum error, weighted towards the hardest
  frequencies.
All take images (B, C, H, W) in [-1, 1] and return per-sample values (B,).
"""

from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from latentdiff.errors import UserError

# VGG16 `features` indices: (slice, conv indices); a ReLU follows every conv, max-pools sit at 4, 9,
# 16, 23
VGG16_SLICES = ((1, (0, 2)), (2, (5, 7)), (3, (10, 12, 14)), (4, (17, 19, 21)), (5, (24, 26, 28)))
VGG16_WIDTHS = (64, 128, 256, 512, 512)
_POOLS = (4, 9, 16, 23)


def _gaussian_window(size: int, sigma: float, device, dtype) -> torch.Tensor:
    coords = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-coords ** 2 / (2 * sigma ** 2))
    return g / g.sum()


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM per sample (B,) for images in [-1, 1] (data range 2, K1 = 0.01, K2 = 0.03),
    Gaussian window (size ≤ the image's smaller side, odd), valid positions only, averaged over
    channels. Always in fp32 (the variances E[x²] − μ² cancel catastrophically in bf16)."""
    with torch.autocast(x.device.type, enabled=False):
        return _ssim_fp32(x.float(), y.float(), window, sigma)


def _ssim_fp32(x: torch.Tensor, y: torch.Tensor, window: int, sigma: float) -> torch.Tensor:
    window = min(window, x.shape[-1], x.shape[-2])
    window -= 1 - window % 2
    c = x.shape[1]
    g = _gaussian_window(window, sigma, x.device, torch.float32)
    kernel_h = g.view(1, 1, 1, -1).expand(c, 1, 1, window)
    kernel_v = g.view(1, 1, -1, 1).expand(c, 1, window, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, kernel_h, groups=c), kernel_v, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x ** 2
    var_y = blur(y * y) - mu_y ** 2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * 2) ** 2, (0.03 * 2) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return s.flatten(1).mean(1)


def focal_frequency_loss(x: torch.Tensor, y: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """FFL = mean_uv w(u,v)·|F_x(u,v) − F_y(u,v)|², w = |F_x − F_y|^α normalised to max 1 per image,
    no gradient."""
    spectrum_x, spectrum_y = (torch.fft.fft2(v.float(), norm="ortho") for v in (x, y))
    distance = (spectrum_x - spectrum_y).abs().pow(2)
    weight = distance.sqrt().pow(alpha)
    weight = (weight / weight.flatten(2).amax(2).clamp(min=1e-12)[..., None, None]).detach()
    return (weight * distance).flatten(1).mean(1)


class LPIPS(nn.Module):
    """d(x, y) = Σ_l mean_hw ‖w_l ⊙ (φ̂_l(x) − φ̂_l(y))‖², φ̂ the channel-normalised VGG16
    relu{1_2..5_3}."""

    def __init__(self):
        super().__init__()
        self.register_buffer("shift",
                             torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("scale",
                             torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        self.net = nn.Module()
        channels, start = 3, 0
        for slice_index, convs in VGG16_SLICES:
            stage = nn.Sequential()
            stop = convs[-1] + 2
            for i in range(start, stop):
                if i in _POOLS:
                    stage.add_module(str(i), nn.MaxPool2d(2, 2))
                elif i in convs:
                    width = VGG16_WIDTHS[slice_index - 1]
                    stage.add_module(str(i), nn.Conv2d(channels, width, 3, padding=1))
                    channels = width
                else:
                    stage.add_module(str(i), nn.ReLU(inplace=False))
            setattr(self.net, f"slice{slice_index}", stage)
            start = stop
        for k, width in enumerate(VGG16_WIDTHS):
            lin = nn.Module()
            lin.model = nn.Sequential(nn.Dropout(), nn.Conv2d(width, 1, 1, bias=False))
            setattr(self, f"lin{k}", lin)
        self.requires_grad_(False).eval()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x, y (B, 3, H, W) in [-1, 1] → (B,); grey images (B, 1, H, W) are repeated to RGB."""
        if x.shape[1] == 1:
            x, y = x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1)
        h_x, h_y = (x.float() - self.shift) / self.scale, (y.float() - self.shift) / self.scale
        total = torch.zeros(x.shape[0], device=x.device)
        for k in range(len(VGG16_SLICES)):
            stage = getattr(self.net, f"slice{k + 1}")
            h_x, h_y = stage(h_x), stage(h_y)
            diff = (_unit_channels(h_x) - _unit_channels(h_y)) ** 2
            total = total + getattr(self, f"lin{k}").model(diff).mean((1, 2, 3))
        return total


def _unit_channels(features: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return features / (features.pow(2).sum(1, keepdim=True).sqrt() + eps)


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per sample (B,) of images in [-1, 1], measured in [0, 1] (peak 1)."""
    mse = ((x.float() - y.float()) / 2).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp(min=1e-10))



def _read_state(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file or a torch pickle read with weights_only=True (a `state_dict`
    entry is unwrapped); anything unreadable is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"LPIPS weight file {path} does not exist; give the path of a local "
                        ".safetensors or .pth file")
    try:
        if path.suffix == ".safetensors":
            return load_file(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to parse means a corrupt or foreign file
        raise UserError(f"cannot read weights from {path} ({type(e).__name__}); is it a complete "
                        f".safetensors or .pth file?") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path} does not hold a flat dict of tensors (a state_dict)")
    return state


def _lpips_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the layouts in circulation onto ours: an original autoencoder checkpoint
    (`loss.perceptual_loss.*`), taming/richzhang LPIPS (`lin{k}.model.1.weight`,
    `net.slice{k}.{i}.*`) and torchvision VGG16 (`features.{i}.*`)."""
    slice_of = {i: s for s, convs in VGG16_SLICES for i in convs}
    out = {}
    for name, tensor in state.items():
        for prefix in ("loss.perceptual_loss.", "perceptual_loss."):
            name = name.removeprefix(prefix)
        if name.startswith("features."):
            index = int(name.split(".")[1])
            if index not in slice_of:
                continue
            name = f"net.slice{slice_of[index]}.{name.removeprefix('features.')}"
        if name.startswith(("net.slice", "lin")):
            out[name] = tensor
    return out


def load_lpips(lpips_weights: str | Path, vgg16_weights: str | Path | None = None) -> LPIPS:
    """LPIPS-VGG from local files: `lpips_weights` holds the linear layers (and possibly the VGG16
    too); `vgg16_weights` (torchvision's vgg16 state_dict or an equivalent) supplies the VGG16 when
    the first does not. A file of another architecture raises UserError naming the first tensor that
    does not fit."""
    model = LPIPS()
    state = _lpips_names(_read_state(lpips_weights))
    if vgg16_weights is not None:
        state.update(_lpips_names(_read_state(vgg16_weights)))
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    if missing:
        where = f"{lpips_weights}" + (f" + {vgg16_weights}" if vgg16_weights else "")
        hint = ("give the torchvision VGG16 weights as loss.vgg16_weights" if missing[0].startswith("net.")
                else "give the LPIPS linear layers (lin0..lin4) as loss.lpips_weights")
        raise UserError(f"{where} is not LPIPS-VGG16: {len(missing)} tensors missing (first: "
                        f"{missing[0]}); {hint}")
    for key, tensor in expected.items():
        if state[key].shape != tensor.shape:
            raise UserError(f"{lpips_weights}: {key} has shape {tuple(state[key].shape)}, "
                            f"LPIPS-VGG16 needs {tuple(tensor.shape)}; these are weights of "
                            "another network")
    model.load_state_dict({k: state[k].float() for k in expected})
    return model.requires_grad_(False).eval()
