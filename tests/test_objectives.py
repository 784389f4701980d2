"""The training loss is λ(σ)·‖D(x0 + σn; σ) − x0‖² on the sampling denoiser; with λ = 1/c_out² it is
the MSE of the network's own output against ε, x0 or v (DDPM's L_simple and its x0/v forms)."""

import pytest
import torch
from torch import nn

from latentdiff.config import NoiseScheduleConfig
from latentdiff.denoiser import Denoiser
from latentdiff.noise import NoiseSchedule
from latentdiff.objectives import ddpm_loss
from latentdiff.preconditioning import discrete_preconditioning


class Net(nn.Module):
    """Any function of (z_t, t): a fixed random conv plus a t term."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, z_t, t, class_labels=None, context=None):
        return self.conv(z_t) + torch.sin(t.float() / 100).reshape(-1, 1, 1, 1)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_ddpm_loss_is_the_network_output_mse(prediction):
    torch.manual_seed(0)
    schedule, net = NoiseSchedule(NoiseScheduleConfig()), Net()
    x0, noise, t = torch.randn(6, 3, 5, 5), torch.randn(6, 3, 5, 5), torch.tensor([0, 1, 10, 300, 700, 999])
    a = schedule.alphas_cumprod[t].reshape(-1, 1, 1, 1)
    z_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    target = {"eps": noise, "x0": x0, "v": a.sqrt() * noise - (1 - a).sqrt() * x0}[prediction]
    expected = (net(z_t, t) - target).pow(2).flatten(1).mean(1)
    loss = ddpm_loss(Denoiser(net, discrete_preconditioning(schedule, prediction)), x0, t, noise)
    torch.testing.assert_close(loss, expected, rtol=2e-4, atol=1e-6)
