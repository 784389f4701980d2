"""Train a wavelet diffusion GAN (WaveDiff; Phung et al., CVPR 2023) on a frozen autoencoder's
latents: `latentdiff train-wavediff CONFIG`.

The training images are encoded once; a step draws z_0 (a posterior sample, normalised as the
latent model's), k ~ U{1..T}, the real pair x_{k−1} ~ q(x_{k−1} | x_0), x_k ~ q(x_k | x_{k−1}) and
the fake x'_{k−1} ~ q(x_{k−1} | x_k, x̃_0) with x̃_0 = G(x_k, k, z) (`gan_chain.py`). The generator
minimises softplus(−D(x'_{k−1}, x_k, k)) + λ_rec·‖x̃_0 − x_0‖₁; then the discriminator minimises
softplus(−D(x_{k−1}, x_k, k)) + softplus(D(x'_{k−1}, x_k, k)) + γ/2·‖∇_{x_{k−1}} D(x_{k−1}, x_k,
k)‖² (R1 on real pairs), with a fresh z (DDGAN's losses, Xiao et al. 2022, Sec. 4). The
generator's EMA is what is sampled.
"""

from pathlib import Path

import torch
from lightning_fabric import Fabric
from torch.nn import functional as F

from latentdiff.autoencoder import LatentCodec, LatentStats
from latentdiff.checkpoints.io import prefixed
from latentdiff.checkpoints.models import WAVEDIFF, load_autoencoder
from latentdiff.checkpoints.wavediff import wavediff_metadata
from latentdiff.config import to_dict
from latentdiff.config_systems import WaveDiffTrainConfig
from latentdiff.data import batch_indices, to_uint8
from latentdiff.errors import UserError
from latentdiff.gan_chain import GANChainSchedule
from latentdiff.images import save_image_grid
from latentdiff.pipelines.wavediff import generate_wavediff
from latentdiff.train.autoencoder import encode_posteriors, load_training_data
from latentdiff.train.engine import (Run, check_same, make_fabric, seeded, step_generator,
                                     train_state, training_loop)
from latentdiff.train.gan import AdversarialPair
from latentdiff.train.students import fixed
from latentdiff.wavediff import WaveDiff, WaveletDiscriminator, WaveletGenerator


def train_wavediff(cfg: WaveDiffTrainConfig, resume: bool = False) -> Path:
    """Train (or continue with resume=True) and return the path of the final checkpoint."""
    if cfg.train.devices * cfg.train.num_nodes != 1:
        raise UserError("train-wavediff trains in one process; set train.devices=1 and "
                        "train.num_nodes=1")
    fabric = make_fabric(cfg.train)
    return fabric.launch(_train, cfg, resume)


def _check_size(cfg: WaveDiffTrainConfig, factor: int) -> None:
    multiple = cfg.generator.latent_multiple  # from the config: no network built to check
    side = cfg.data.image_size // factor
    if side % multiple:
        raise UserError(f"the latents are {side}×{side} but this generator needs sides that are "
                        f"multiples of {multiple} (two DWTs and "
                        f"{len(cfg.generator.channel_mult) - 1} downsamplings); use fewer "
                        "generator.channel_mult levels or a larger data.image_size")


def _train(fabric: Fabric, cfg: WaveDiffTrainConfig, resume: bool) -> Path:
    tc, device = cfg.train, fabric.device
    autoencoder = load_autoencoder(cfg.autoencoder, device)
    _check_size(cfg, autoencoder.config.downsampling_factor)
    data, _ = load_training_data(cfg.data, autoencoder.config.downsampling_factor,
                                 autoencoder.config.in_channels)
    run = Run(Path(tc.out_dir), fabric, tc.keep_checkpoints)
    stored = run.start(resume)
    if stored is not None:
        check_same(fixed(stored["config"]), fixed(to_dict(cfg)), "the config", run.checkpoint)
    means, stds = encode_posteriors(autoencoder, data, device)
    if stored is not None:
        stats = LatentStats(**stored["latent_stats"])
    else:  # as the latent model's: global 1/std of posterior samples
        noise = torch.randn(means.shape, generator=step_generator(tc.seed, -1))
        stats = LatentStats.measure(means + stds * noise)
    codec = LatentCodec(autoencoder, stats).to(device)
    schedule = GANChainSchedule(cfg.num_timesteps, cfg.beta_min, cfg.beta_max)
    c = means.shape[1]
    pair = AdversarialPair.setup(
        fabric, tc, seeded(tc.seed, lambda: WaveletGenerator(c, cfg.generator)),
        seeded(tc.seed + 1, lambda: WaveletDiscriminator(c, cfg.discriminator,
                                                         cfg.generator.wavelet)),
        cfg.ema_decay, cfg.disc_lr, stored, run.checkpoint, WAVEDIFF, "generator_ema")
    g_model, d_model = pair.g_model, pair.d_model
    system = WaveDiff(pair.ema.model, codec, schedule, cfg.data.image_size)
    step_data: dict[str, torch.Tensor] = {}

    def fake(x_k: torch.Tensor, k: torch.Tensor, z: torch.Tensor, noise: torch.Tensor):
        """(x̃_0, x'_{k−1}) of the generator being trained."""
        x0_pred = g_model(x_k, k, z)
        return x0_pred, schedule.posterior(x0_pred, x_k, k, noise)

    def loss_of(step: int) -> torch.Tensor:
        generator = step_generator(tc.seed, step)
        b = tc.batch_size
        index = batch_indices(len(data), b, step, tc.seed)
        draws = [torch.randn(b, *means.shape[1:], generator=generator) for _ in range(5)]
        posterior_noise, prev_noise, step_noise, g_post, d_post = (v.to(device) for v in draws)
        z_g, z_d = (torch.randn(b, cfg.generator.z_dim, generator=generator).to(device)
                    for _ in range(2))
        k = torch.randint(1, schedule.T + 1, (b,), generator=generator).to(device)
        x0 = codec.normalize(means[index].to(device) + stds[index].to(device) * posterior_noise)
        x_prev = schedule.marginal(x0, k - 1, prev_noise)
        x_k = schedule.step(x_prev, k, step_noise)
        step_data.update(x_prev=x_prev, x_k=x_k, k=k, z_d=z_d, d_post=d_post)
        d_model.requires_grad_(False)
        x0_pred, x_fake = fake(x_k, k, z_g, g_post)
        adversarial = F.softplus(-d_model(x_fake, x_k, k)).mean()
        rec = (x0_pred - x0).abs().mean()
        step_data["rec"] = rec.detach()
        return adversarial + cfg.rec_weight * rec

    def after_step(step: int) -> None:
        x_k, k = step_data["x_k"], step_data["k"]
        with torch.no_grad():
            _, x_fake = fake(x_k, k, step_data["z_d"], step_data["d_post"])
        step_data["d_loss"] = pair.discriminator_step(
            fabric, step, step_data["x_prev"], lambda x: d_model(x, x_k, k), x_fake, cfg.r1_gamma)

    def save(step: int) -> None:
        tensors = {**prefixed("generator.", pair.G.state_dict()),
                   **prefixed("generator_ema.", pair.ema.model.state_dict()),
                   **prefixed("discriminator.", pair.D.state_dict()),
                   **prefixed("autoencoder.", autoencoder.state_dict())}
        run.save(tensors, pair.optimizers(),
                 {**wavediff_metadata(system), "config": to_dict(cfg),
                  **train_state(step, fabric, ema_updates=pair.ema.num_updates)})

    def preview(step: int) -> None:
        images = generate_wavediff(system, seeds=list(range(64)))
        save_image_grid(to_uint8(images), run.sample_path(step), ncols=8)

    run.open(cfg, pair.start)
    training_loop(run, fabric, tc, pair.start, "wavediff", loss_of, g_model, pair.g_opt,
                  after_step, save,
                  preview, log_values=lambda: {"d_loss": float(step_data["d_loss"]),
                                               "rec": float(step_data["rec"])})
    return run.checkpoint
