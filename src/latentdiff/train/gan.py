"""What the two adversarially trained systems (TDPM's prior, WaveDiff) share: the generator and
discriminator with their optimisers (the discriminator's own learning rate), the generator's EMA,
exact resumption, and the discriminator's step (non-saturating loss with an R1 penalty on real
samples, Mescheder et al. 2018)."""

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from lightning_fabric import Fabric
from torch import nn
from torch.nn import functional as F

from latentdiff.config import TrainConfig
from latentdiff.train.ema import EMA
from latentdiff.train.engine import make_optimizer, optimizer_step, resume_state


@dataclass
class AdversarialPair:
    """G and D (the raw modules), their Fabric-wrapped forms, optimisers, the EMA of G, the
    discriminator's train config and the first step to run."""

    G: nn.Module
    D: nn.Module
    g_model: nn.Module
    d_model: nn.Module
    g_opt: torch.optim.Optimizer
    d_opt: torch.optim.Optimizer
    ema: EMA
    disc_train: TrainConfig
    start: int

    @classmethod
    def setup(cls, fabric: Fabric, tc: TrainConfig, G: nn.Module, D: nn.Module,
              ema_decay: float, disc_lr: float | None, stored: dict | None, checkpoint: Path,
              kind: str, ema_prefix: str) -> "AdversarialPair":
        """Optimisers (D at `disc_lr`, else tc.lr), G's EMA, the state of a `stored` run (its
        weights under "generator", "discriminator" and `ema_prefix`), then Fabric's setup."""
        ema = EMA(G, ema_decay)
        disc_tc = dataclasses.replace(tc, lr=disc_lr or tc.lr)
        g_opt, d_opt = make_optimizer(G.parameters(), tc), make_optimizer(D.parameters(), disc_tc)
        start = 0
        if stored is not None:
            start = resume_state(checkpoint, stored, kind,
                                 {"generator": G, "discriminator": D, ema_prefix: ema.model},
                                 {"optimizer": g_opt, "disc_optimizer": d_opt})
            ema.num_updates = int(stored["train_state"]["ema_updates"])
        g_model, g_opt = fabric.setup(G, g_opt)
        d_model, d_opt = fabric.setup(D, d_opt)
        ema.model.to(fabric.device)
        return cls(G, D, g_model, d_model, g_opt, d_opt, ema, disc_tc, start)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"optimizer": self.g_opt, "disc_optimizer": self.d_opt}

    def discriminator_step(self, fabric: Fabric, step: int, real: torch.Tensor,
                           critic: Callable[[torch.Tensor], torch.Tensor],
                           fake: torch.Tensor, r1_gamma: float) -> torch.Tensor:
        """After the generator's step: G's EMA update, then one step of D on softplus(−D(real)) +
        softplus(D(fake)) + γ/2·‖∇_real D(real)‖²; `critic(x)` is D's logits (B,) on x with
        whatever else D takes bound in. Returns D's loss."""
        self.ema.update(self.G)
        self.d_model.requires_grad_(True)
        real = real.detach().requires_grad_(r1_gamma > 0)
        real_logits = critic(real)
        loss = F.softplus(-real_logits).mean() + F.softplus(critic(fake.detach())).mean()
        if r1_gamma > 0:
            grad, = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
            loss = loss + r1_gamma / 2 * grad.square().sum((1, 2, 3)).mean()
        return optimizer_step(fabric, self.d_model, self.d_opt, loss, self.disc_train, step)
