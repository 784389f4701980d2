"""Train a truncated diffusion model's prior (TDPM; Zheng et al., ICLR 2023) on a trained latent
diffusion model: `latentdiff train-tdpm CONFIG`.

The model's training images are encoded once; a step draws z_0 (a posterior sample, normalised as
the model's latents) and the truncated marginal's x_σ = z_0 + σ·n at σ = σ_{t_trunc}
(`truncation.forward_marginal`). prior=gan: the generator G minimises softplus(−D(G(n))) and the
discriminator D minimises softplus(−D(x_σ)) + softplus(D(G(n'))) + γ/2·‖∇_x D(x_σ)‖² (R1), one step
each (the original's non-saturating losses); the generator's EMA is the prior that is sampled.
prior=gaussian: one pass over the latents gives the moment-matched prior, no steps. The checkpoint
is the model's (EMA network, autoencoder, conditioner, metadata) with the prior added, so `sample`
and `eval` read it as a latent diffusion model whose chains start at the prior.
"""

import dataclasses
import logging
from pathlib import Path

import torch
from lightning_fabric import Fabric

from latentdiff.checkpoints.io import prefixed
from latentdiff.checkpoints.models import (LATENT_DIFFUSION, load_latent_diffusion, system_metadata,
                                           system_tensors)
from latentdiff.coarse_to_fine import refuse_stages
from latentdiff.config import to_dict
from latentdiff.config_systems import TruncatedDiffusionTrainConfig
from latentdiff.data import batch_indices, to_uint8
from latentdiff.errors import UserError
from latentdiff.images import save_image_grid
from latentdiff.ldm import LatentDiffusion
from latentdiff.pipelines import generate
from latentdiff.train.autoencoder import encode_posteriors, load_training_data
from latentdiff.train.engine import (Run, check_same, make_fabric, seeded, step_generator,
                                     train_state, training_loop)
from latentdiff.train.gan import AdversarialPair
from latentdiff.train.students import fixed, stored_data
from latentdiff.truncation import (GaussianPrior, PriorDiscriminator, PriorGenerator,
                                   TruncatedPrior, forward_marginal, truncation_sigma)

log = logging.getLogger(__name__)


def train_tdpm(cfg: TruncatedDiffusionTrainConfig, resume: bool = False) -> Path:
    """Train (or continue with resume=True) and return the path of the final checkpoint."""
    if cfg.train.devices * cfg.train.num_nodes != 1:
        raise UserError("train-tdpm trains its small prior in one process; set train.devices=1 and "
                        "train.num_nodes=1")
    cfg = dataclasses.replace(cfg, data=stored_data(cfg.model, cfg.data, "the latents of the prior"))
    fabric = make_fabric(cfg.train)
    return fabric.launch(_train, cfg, resume)


def _check_model(cfg: TruncatedDiffusionTrainConfig, model: LatentDiffusion) -> float:
    """σ_{t_trunc}, after one-line errors for models a prior of x alone cannot start."""
    if model.student is not None:
        raise UserError(f"{cfg.model} is a distilled student; truncate a diffusion model")
    refuse_stages(model, cfg.model, "a truncated chain")
    if model.prior is not None:
        raise UserError(f"{cfg.model} is already truncated (t_trunc={model.prior.t_trunc}); "
                        "give the model it was made from")
    if model.conditioner is not None or model.num_classes:
        raise UserError(f"{cfg.model} is a conditional model; the truncated prior is "
                        "unconditional, so train-tdpm takes unconditional models")
    return truncation_sigma(model.schedule, cfg.t_trunc)


def _train(fabric: Fabric, cfg: TruncatedDiffusionTrainConfig, resume: bool) -> Path:
    tc, device = cfg.train, fabric.device
    run = Run(Path(tc.out_dir), fabric, tc.keep_checkpoints)
    stored = run.start(resume)
    model = load_latent_diffusion(cfg.model, device)
    sigma = _check_model(cfg, model)
    autoencoder = model.codec.autoencoder
    data, _ = load_training_data(cfg.data, autoencoder.config.downsampling_factor,
                                 autoencoder.config.in_channels)
    means, stds = encode_posteriors(autoencoder, data, device)
    c = means.shape[1]
    if stored is not None:
        check_same(fixed(stored["config"]), fixed(to_dict(cfg)), "the config", run.checkpoint)

    def save(prior: TruncatedPrior, step: int, extra: dict, optimizers: dict, **state) -> None:
        truncated = dataclasses.replace(model, prior=prior)
        run.save({**system_tensors(truncated), **extra}, optimizers,
                 {**system_metadata(truncated), "config": to_dict(cfg),
                  **train_state(step, fabric, **state)})

    def preview(prior: TruncatedPrior, step: int) -> None:
        images = generate(dataclasses.replace(model, prior=prior), seeds=list(range(64)))
        save_image_grid(to_uint8(images), run.sample_path(step), ncols=8)

    if cfg.prior == "gaussian":
        generator = torch.Generator().manual_seed(tc.seed)
        z0 = model.codec.normalize(means + stds * torch.randn(means.shape, generator=generator))
        prior = TruncatedPrior("gaussian", cfg.t_trunc, sigma, GaussianPrior.of_latents(z0, sigma))
        run.open(cfg, 0)
        save(prior.to(device), 0, {}, {})  # no training steps
        if fabric.is_global_zero:
            preview(prior, 0)
        return run.checkpoint

    pair = AdversarialPair.setup(
        fabric, tc, seeded(tc.seed, lambda: PriorGenerator(c, sigma, cfg.generator)),
        seeded(tc.seed + 1, lambda: PriorDiscriminator(c, sigma, cfg.discriminator)),
        cfg.ema_decay, cfg.disc_lr, stored, run.checkpoint, LATENT_DIFFUSION, "prior")
    g_model, d_model = pair.g_model, pair.d_model
    prior = TruncatedPrior("gan", cfg.t_trunc, sigma, pair.ema.model)
    step_data: dict[str, torch.Tensor] = {}

    def loss_of(step: int) -> torch.Tensor:
        generator = step_generator(tc.seed, step)
        index = batch_indices(len(data), tc.batch_size, step, tc.seed)
        draws = [torch.randn(tc.batch_size, *means.shape[1:], generator=generator) for _ in range(4)]
        posterior_noise, noise, g_noise, d_noise = (v.to(device) for v in draws)
        z0 = model.codec.normalize(means[index] + stds[index] * posterior_noise)
        step_data.update(real=forward_marginal(z0, sigma, noise), d_noise=d_noise)
        d_model.requires_grad_(False)
        return torch.nn.functional.softplus(-d_model(g_model(g_noise))).mean()

    def after_step(step: int) -> None:
        with torch.no_grad():
            fake = g_model(step_data["d_noise"])
        step_data["d_loss"] = pair.discriminator_step(fabric, step, step_data["real"], d_model,
                                                      fake, cfg.r1_gamma)

    def save_gan(step: int) -> None:
        save(prior, step, {**prefixed("generator.", pair.G.state_dict()),
                           **prefixed("discriminator.", pair.D.state_dict())},
             pair.optimizers(), ema_updates=pair.ema.num_updates)

    run.open(cfg, pair.start)
    training_loop(run, fabric, tc, pair.start, "tdpm prior", loss_of, g_model, pair.g_opt,
                  after_step,
                  save_gan, lambda step: preview(prior, step),
                  log_values=lambda: {"d_loss": float(step_data["d_loss"])})
    return run.checkpoint
