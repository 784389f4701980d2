"""Exponential moving average of the weights, used for sampling."""

import copy

import torch
from torch import nn


class EMA:
    """θ_ema ← d·θ_ema + (1 − d)·θ, d = min(decay, (1 + n)/(10 + n)) after n updates (the original
    LitEma warm-up, so early averages are not dominated by the random initialisation)."""

    def __init__(self, model: nn.Module, decay: float, num_updates: int = 0):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.num_updates = decay, num_updates

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.num_updates += 1
        d = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        torch._foreach_lerp_(list(self.model.parameters()), list(model.parameters()), 1.0 - d)
        for ema_buffer, buffer in zip(self.model.buffers(), model.buffers()):
            ema_buffer.copy_(buffer)
