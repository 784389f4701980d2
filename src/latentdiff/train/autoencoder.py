"""Train the first stage: `latentdiff train-autoencoder CONFIG` (SPEC §1, L1 + KL for now)."""

import logging
from pathlib import Path

import torch
from lightning_fabric import Fabric
from tqdm import tqdm

from latentdiff.autoencoder import AutoencoderKL
from latentdiff.autoencoder.losses import autoencoder_loss
from latentdiff.checkpoints.io import KIND, prefixed
from latentdiff.checkpoints.models import AUTOENCODER
from latentdiff.config import AutoencoderTrainConfig, DataConfig, to_dict
from latentdiff.data import (ImageData, batch_indices, load_dataset, rank_slice, split_holdout, to_model_range,
                             to_uint8)
from latentdiff.errors import UserError
from latentdiff.images import save_image_grid
from latentdiff.train.engine import (Run, check_finite, check_same, due, interrupted, make_fabric, make_optimizer,
                                     mean_over_processes, optimizer_step, resume_state, seeded, step_generator,
                                     train_state)

log = logging.getLogger(__name__)


def load_training_data(cfg: DataConfig, factor: int, channels: int) -> tuple[ImageData, ImageData]:
    """(train, held-out) split of the configured data, checked against the model's factor f and channels."""
    if cfg.image_size % factor:
        fixed = max(factor, round(cfg.image_size / factor) * factor)
        raise UserError(f"data.image_size={cfg.image_size} is not divisible by the autoencoder's f={factor}; "
                        f"use data.image_size={fixed}")
    data = load_dataset(cfg)
    if data.channels != channels:
        raise UserError(f"the data has {data.channels} channel(s) but the model takes {channels}; set "
                        f"data.channels={channels} or model.in_channels={data.channels}")
    return split_holdout(data, cfg.holdout, cfg.split_seed)


def train_autoencoder(cfg: AutoencoderTrainConfig, resume: bool = False) -> Path:
    """Train (or continue with resume=True) and return the path of the final checkpoint."""
    fabric = make_fabric(cfg.train)
    return fabric.launch(_train, cfg, resume)


@torch.no_grad()
def reconstruction_metrics(autoencoder: AutoencoderKL, data: ImageData, device: torch.device,
                           batch_size: int = 256) -> dict[str, float]:
    """Mean L1 and PSNR (dB, images in [0, 1]) of D(μ(x)) over `data`."""
    l1, mse = [], []
    for start in range(0, len(data), batch_size):
        x = to_model_range(data.images[start:start + batch_size]).to(device)
        recon = autoencoder.decode(autoencoder.encode(x).mean).clamp(-1, 1)
        l1.append((recon - x).abs().flatten(1).mean(1).cpu())
        mse.append(((recon - x) / 2).pow(2).flatten(1).mean(1).cpu())
    mse_all = torch.cat(mse)
    return {"l1": torch.cat(l1).mean().item(), "psnr": (10 * torch.log10(1 / mse_all.clamp(min=1e-10))).mean().item()}


def _train(fabric: Fabric, cfg: AutoencoderTrainConfig, resume: bool) -> Path:
    tc = cfg.train
    run = Run(Path(tc.out_dir), fabric)
    stored = run.start(cfg, resume)
    train_data, heldout = load_training_data(cfg.data, cfg.model.downsampling_factor, cfg.model.in_channels)
    autoencoder = seeded(tc.seed, lambda: AutoencoderKL(cfg.model))
    optimizer = make_optimizer(autoencoder.parameters(), tc)
    start = 0
    if stored is not None:
        check_same(stored["autoencoder_config"], to_dict(cfg.model), "the model config", run.checkpoint)
        start = resume_state(run.checkpoint, stored, AUTOENCODER, {"autoencoder": autoencoder}, optimizer)
    model, optimizer = fabric.setup(autoencoder, optimizer)

    def save(step: int) -> None:
        run.save(prefixed("autoencoder.", autoencoder.state_dict()), optimizer,
                 {KIND: AUTOENCODER, "autoencoder_config": to_dict(cfg.model), "config": to_dict(cfg),
                  "image_size": cfg.data.image_size, **train_state(step, fabric)})

    latent_side = cfg.data.image_size // cfg.model.downsampling_factor
    preview = to_model_range(heldout.images[:8] if len(heldout) else train_data.images[:8]).to(fabric.device)
    progress = tqdm(range(start, tc.max_steps), initial=start, total=tc.max_steps, desc="autoencoder",
                    disable=not fabric.is_global_zero, dynamic_ncols=True)
    step = start
    try:
        for step in progress:
            generator = step_generator(tc.seed, step)
            index = batch_indices(len(train_data), tc.batch_size, step, tc.seed)
            noise = torch.randn(tc.batch_size, cfg.model.latent_channels, latent_side, latent_side, generator=generator)
            index, noise = (rank_slice(t, fabric.global_rank, fabric.world_size) for t in (index, noise))
            x = to_model_range(train_data.images[index]).to(fabric.device)
            recon, posterior = model(x, noise.to(fabric.device))
            terms = autoencoder_loss(x, recon, posterior, cfg.loss)
            loss = terms["loss"].mean()
            check_finite(loss, step)
            optimizer_step(fabric, model, optimizer, loss, tc, step)
            done = step + 1
            if due(done, tc.log_every, tc.max_steps):
                values = {k: mean_over_processes(fabric, v.mean()) for k, v in terms.items()}
                run.log(done, **values)
                progress.set_postfix(loss=f"{values['loss']:.4f}")
            if due(done, tc.sample_every, tc.max_steps):
                _write_reconstructions(run, autoencoder, preview, done)
            if due(done, tc.checkpoint_every, tc.max_steps):
                save(done)
    except KeyboardInterrupt:
        save(step)
        raise interrupted(step) from None
    if start >= tc.max_steps:
        log.info("%s is already trained to %d steps", run.checkpoint, tc.max_steps)
    elif fabric.is_global_zero and len(heldout):
        metrics = reconstruction_metrics(autoencoder.eval(), heldout, fabric.device)
        run.log(tc.max_steps, **{f"heldout_{k}": v for k, v in metrics.items()})
        log.info("held-out reconstruction: L1 %.4f, PSNR %.2f dB", metrics["l1"], metrics["psnr"])
    return run.checkpoint


@torch.no_grad()
def _write_reconstructions(run: Run, autoencoder: AutoencoderKL, x: torch.Tensor, step: int) -> None:
    """Originals (top row) above their reconstructions D(μ(x)) (bottom row)."""
    if not run.fabric.is_global_zero:
        return
    was_training = autoencoder.training
    recon = autoencoder.eval().decode(autoencoder.encode(x).mean)
    autoencoder.train(was_training)
    save_image_grid(to_uint8(torch.cat([x, recon])), run.sample_path(step), ncols=len(x))
