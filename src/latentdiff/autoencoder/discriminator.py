"""The patch-based discriminator D_ψ of the first-stage loss (paper Sec. 3.1): PatchGAN
(Isola et al. 2017), as taming's `NLayerDiscriminator` (module names `main.{i}`, BatchNorm,
LeakyReLU 0.2, N(0, 0.02) init), and its losses."""

import torch
import torch.nn.functional as F
from torch import nn

from latentdiff.errors import UserError


class PatchDiscriminator(nn.Module):
    """x (B, C, H, W) in [-1, 1] → patch logits (B, 1, H', W'): `layers` stride-2 4×4 convs (width
    doubling, capped at 8×), one stride-1 conv, then a 1-channel conv; each logit sees a 70×70 patch
    for layers = 3."""

    def __init__(self, in_channels: int = 3, channels: int = 64, layers: int = 3):
        super().__init__()
        seq: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        mult = 1
        for n in range(1, layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < layers else 1
            seq += [nn.Conv2d(channels * prev, channels * mult, 4, stride, 1, bias=False),
                    nn.BatchNorm2d(channels * mult), nn.LeakyReLU(0.2)]
        seq.append(nn.Conv2d(channels * mult, 1, 4, 1, 1))
        self.main = nn.Sequential(*seq)
        self.layers = layers
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    @staticmethod
    def logit_size(image_size: int, layers: int) -> int:
        """Side of the logit map: each stride-2 4×4 conv (padding 1) maps n → ⌊(n − 2)/2⌋ + 1, the
        two stride-1 convs each take one off."""
        n = image_size
        for _ in range(layers):
            n = (n - 2) // 2 + 1
        return n - 2

    def check_input(self, image_size: int) -> None:
        if self.logit_size(image_size, self.layers) < 1:
            fits = max((n for n in range(1, self.layers) if self.logit_size(image_size, n) >= 1),
                       default=None)
            fix = f"set loss.disc_layers={fits}" if fits else "use larger images"
            raise UserError(f"images of {image_size}px are too small for a {self.layers}-layer "
                            f"discriminator; {fix}")

    def forward(self, x: torch.Tensor, return_features: bool = False):
        """Logits, or (logits, [activations after every LeakyReLU]) for feature matching."""
        features = []
        for module in self.main:
            x = module(x)
            if return_features and isinstance(module, nn.LeakyReLU):
                features.append(x)
        return (x, features) if return_features else x


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """L_D = ½ (E[max(0, 1 − D(x))] + E[max(0, 1 + D(x̃))]) (Lim & Ye 2017), per sample (B,)."""
    return 0.5 * (F.relu(1.0 - logits_real).flatten(1).mean(1) + F.relu(1.0 + logits_fake).flatten(1).mean(1))


def generator_adv_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """L_adv = −E[D(x̃)] per sample (B,)."""
    return -logits_fake.flatten(1).mean(1)


def r1_penalty(logits_real: torch.Tensor, x_real: torch.Tensor) -> torch.Tensor:
    """R1 = ½ E‖∇_x D(x)‖² on real images (Mescheder et al. 2018), per sample (B,); x_real must
    require grad."""
    (grad,) = torch.autograd.grad(logits_real.sum(), x_real, create_graph=True)
    return 0.5 * grad.pow(2).flatten(1).sum(1)


def feature_matching_loss(features_real: list[torch.Tensor],
                          features_fake: list[torch.Tensor]) -> torch.Tensor:
    """Mean over layers of mean |φ_l(x) − φ_l(x̃)| per sample (B,), real features as fixed
    targets."""
    terms = [(r.detach() - f).abs().flatten(1).mean(1) for r,
             f in zip(features_real, features_fake)]
    return torch.stack(terms).mean(0)
