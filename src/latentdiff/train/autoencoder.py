"""Train the first stage: `latentdiff train-autoencoder CONFIG` (paper Sec. 3.1).

Generator step (encoder, decoder, codebook) on L_rec + L_reg + λ·L_adv, then, once
step ≥ loss.disc_start, a discriminator step on the hinge loss; two AdamW optimisers on the same
Fabric engine as the diffusion stage. For VQ, codes unused for `loss.restart_unused_after` steps are
restarted from encoder outputs of all processes.
"""

import dataclasses
import logging
from pathlib import Path

import torch
from lightning_fabric import Fabric

from latentdiff.autoencoder import (Autoencoder, AutoencoderVQ, LatentStats,
                                    Quantized, build_autoencoder)
from latentdiff.autoencoder.discriminator import PatchDiscriminator
from latentdiff.autoencoder.losses import build_perceptual, discriminator_loss, generator_loss
from latentdiff.autoencoder.vq import perplexity, restart_codes
from latentdiff.checkpoints.io import KIND, prefixed, read_tensors
from latentdiff.checkpoints.models import AUTOENCODER
from latentdiff.config import AutoencoderTrainConfig, DataConfig, to_dict
from latentdiff.data import (ImageData, batch_indices, load_dataset, rank_slice, split_holdout,
                             to_model_range, to_uint8)
from latentdiff.data.stream import as_image_data, open_stream
from latentdiff.errors import UserError
from latentdiff.images import save_image_grid
from latentdiff.metrics.reconstruction import codebook_usage, reconstruct, score_reconstructions
from latentdiff.train.engine import (Run, check_same, due,
                                     make_fabric, make_optimizer,
                                     mean_over_processes, optimizer_step, resume_state,
                                     seeded, step_generator,
                                     train_state, training_progress)

log = logging.getLogger(__name__)
RESTART_CANDIDATES = 256  # encoder outputs per process offered to dead codes
STATS_IMAGES = 1024  # streamed: training images the latent statistics are measured on


def check_image_size(cfg: DataConfig, factor: int) -> None:
    if cfg.image_size % factor:
        fixed = max(factor, round(cfg.image_size / factor) * factor)
        raise UserError(f"data.image_size={cfg.image_size} is not divisible by the autoencoder's "
                        f"f={factor}; use data.image_size={fixed}")


def load_training_data(cfg: DataConfig, factor: int, channels: int) -> tuple[ImageData, ImageData]:
    """(train, held-out) split of the configured data, checked against the model's factor f and
    channels."""
    check_image_size(cfg, factor)
    data = load_dataset(cfg)
    if data.channels != channels:
        raise UserError(f"the data has {data.channels} channel(s) but the model takes "
                        f"{channels}; set data.channels={channels} or "
                        f"model.in_channels={data.channels}")
    return split_holdout(data, cfg.holdout, cfg.split_seed)


def train_autoencoder(cfg: AutoencoderTrainConfig, resume: bool = False) -> Path:
    """Train (or continue with resume=True) and return the path of the final checkpoint."""
    if cfg.model.regularizer == "none":
        raise UserError("model.regularizer=none is pixel space and has nothing to train; for "
                        "pixel-space diffusion set `autoencoder: pixels` in the `latentdiff "
                        "train` config")
    fabric = make_fabric(cfg.train)
    return fabric.launch(_train, cfg, resume)


class TrainingImages:
    """The first stage's training images, step by step: held in memory (a slice of a seeded
    permutation per step), or streamed (`data/stream.py`). `sample`: the training images the latent
    statistics are measured on (streamed: the first STATS_IMAGES); `heldout`: the held-out split;
    `count`: the training images."""

    def __init__(self, cfg: AutoencoderTrainConfig, fabric: Fabric):
        self.batch_size, self.seed = cfg.train.batch_size, cfg.train.seed
        self.rank, self.world_size = fabric.global_rank, fabric.world_size
        factor, channels = cfg.model.downsampling_factor, cfg.model.in_channels
        self.stream = None
        if not cfg.data.streamed:
            self.sample, self.heldout = load_training_data(cfg.data, factor, channels)
            self.count = len(self.sample)
            return
        check_image_size(cfg.data, factor)
        self.stream = open_stream(dataclasses.replace(cfg.data, channels=channels),
                                  self.batch_size, self.seed, factor, self.rank, self.world_size)
        records, train = self.stream.records, self.stream.train
        self.count = len(train)
        self.sample = as_image_data(self.stream.examples(train[:STATS_IMAGES]), records)
        self.heldout = as_image_data(self.stream.examples(self.stream.heldout()), records)

    def start(self, start: int, stop: int) -> None:
        if self.stream is not None:
            self._batches = self.stream.batches(start, stop)

    def step(self, step: int) -> torch.Tensor:
        """This process's images (B/world_size, C, H, W) uint8 of step `step`."""
        if self.stream is not None:
            return next(self._batches)["images"]
        index = batch_indices(len(self.sample), self.batch_size, step, self.seed)
        return self.sample.images[rank_slice(index, self.rank, self.world_size)]

    def log_values(self) -> dict:
        return self.stream.log_values() if self.stream is not None else {}


def _check_codebook(cfg: AutoencoderTrainConfig, images: int) -> None:
    side = cfg.data.image_size // cfg.model.downsampling_factor
    vectors = images * side * side
    if cfg.model.regularizer == "vq" and cfg.model.codebook_size > vectors:
        raise UserError(f"model.codebook_size={cfg.model.codebook_size} exceeds the {vectors} "
                        "latent vectors of the training set, so most codes could never be used; "
                        f"set model.codebook_size ≤ {vectors}")


class CodebookMonitor:
    """Steps since each code was last chosen (by any process); restarts the codes idle for `after`
    steps."""

    def __init__(self, codebook_size: int, after: int):
        self.idle = torch.zeros(codebook_size, dtype=torch.long)
        self.after = after
        self.batch_counts = torch.zeros(codebook_size, dtype=torch.long)

    def update(self, fabric: Fabric, quantized: Quantized, autoencoder: AutoencoderVQ,
               optimizer: torch.optim.Optimizer, generator: torch.Generator) -> int:
        """Count this step's codes across processes, restart idle ones; returns how many were
        restarted."""
        k = len(self.idle)
        counts = torch.bincount(quantized.indices.flatten(), minlength=k)
        counts = fabric.all_reduce(counts, reduce_op="sum").cpu() if fabric.world_size > 1 else counts.cpu()
        self.batch_counts = counts
        self.idle = torch.where(counts > 0, 0, self.idle + 1)
        dead = self.idle >= self.after
        if self.after <= 0 or not dead.any():
            return 0
        z = quantized.latents.detach().permute(0, 2, 3, 1).flatten(0, 2)  # (B·h·w, c)
        pick = torch.randint(0, len(z), (RESTART_CANDIDATES,), generator=generator)
        candidates = fabric.all_gather(z[pick.to(z.device)]).reshape(-1, z.shape[1]).float()
        weight = autoencoder.quantize.embedding.weight
        with torch.no_grad():
            weight.copy_(restart_codes(weight, dead.to(weight.device), candidates, generator))
        state = optimizer.state.get(weight, {})
        for key in ("exp_avg", "exp_avg_sq"):  # stale Adam moments would drag the new codes back
            if key in state:
                state[key][dead.to(weight.device)] = 0
        self.idle[dead] = 0
        return int(dead.sum())

    def usage(self) -> float:
        """Fraction of codes chosen within the last `after` steps (or in this step when restarts are
        off)."""
        window = self.after if self.after > 0 else 1
        return (self.idle < window).float().mean().item()


def _train(fabric: Fabric, cfg: AutoencoderTrainConfig, resume: bool) -> Path:
    tc, lc = cfg.train, cfg.loss
    run = Run(Path(tc.out_dir), fabric, tc.keep_checkpoints)
    stored = run.start(resume)
    images = TrainingImages(cfg, fabric)
    train_data, heldout = images.sample, images.heldout  # streamed: a sample of the training split
    _check_codebook(cfg, images.count)
    autoencoder = seeded(tc.seed, lambda: build_autoencoder(cfg.model))
    discriminator = seeded(tc.seed + 1,
                           lambda: PatchDiscriminator(cfg.model.in_channels, lc.disc_channels,
                                                      lc.disc_layers))
    uses_disc = lc.disc_start < tc.max_steps
    if uses_disc:
        discriminator.check_input(cfg.data.image_size)
    perceptual = build_perceptual(lc)
    if isinstance(perceptual, torch.nn.Module):
        perceptual.to(fabric.device)
    disc_tc = dataclasses.replace(tc, lr=lc.disc_lr or tc.lr)
    optimizer = make_optimizer(autoencoder.parameters(), tc)
    disc_optimizer = make_optimizer(discriminator.parameters(), disc_tc)
    monitor = (CodebookMonitor(cfg.model.codebook_size, lc.restart_unused_after)
               if isinstance(autoencoder, AutoencoderVQ) else None)
    start = 0
    if stored is not None:
        check_same(stored["autoencoder_config"], to_dict(cfg.model),
                   "the model config", run.checkpoint)
        start = resume_state(run.checkpoint, stored, AUTOENCODER,
                             {"autoencoder": autoencoder, "discriminator": discriminator},
                             {"optimizer": optimizer, "disc_optimizer": disc_optimizer})
        if monitor is not None:
            monitor.idle = read_tensors(run.checkpoint, "codebook.")["idle"]
    model, optimizer = fabric.setup(autoencoder, optimizer)
    disc, disc_optimizer = fabric.setup(discriminator, disc_optimizer)
    last_layer = autoencoder.decoder.conv_out.weight

    def save(step: int, extra: dict | None = None) -> None:
        tensors = {**prefixed("autoencoder.", autoencoder.state_dict()),
                   **prefixed("discriminator.", discriminator.state_dict())}
        if monitor is not None:
            tensors["codebook.idle"] = monitor.idle
        run.save(tensors, {"optimizer": optimizer, "disc_optimizer": disc_optimizer},
                 {KIND: AUTOENCODER, "autoencoder_config": to_dict(cfg.model),
                  "config": to_dict(cfg),
                  "image_size": cfg.data.image_size, **(extra or {}), **train_state(step, fabric)})

    factor = cfg.model.downsampling_factor
    preview = to_model_range(heldout.images[:8] if len(heldout) else train_data.images[:8]).to(fabric.device)
    run.open(cfg, start)
    images.start(start, tc.max_steps)
    done = start
    with run.signals, training_progress(start, tc.max_steps, "autoencoder", fabric) as progress:
        run.start_clock()
        for step in range(start, tc.max_steps):
            generator = step_generator(tc.seed, step)
            x = to_model_range(images.step(step)).to(fabric.device)
            noise = torch.randn(tc.batch_size, cfg.model.latent_channels, x.shape[-2] // factor,
                                x.shape[-1] // factor, generator=generator)
            noise = rank_slice(noise, fabric.global_rank, fabric.world_size)
            recon, regularizer = model(x, noise.to(fabric.device))
            disc_on = step >= lc.disc_start
            terms = generator_loss(x, recon, regularizer, lc, perceptual,
                                   disc if disc_on else None, last_layer)
            optimizer_step(fabric, model, optimizer, terms["loss"], tc, step)
            if disc_on:
                d_terms = discriminator_loss(disc, x, recon, lc)
                optimizer_step(fabric, disc, disc_optimizer, d_terms["loss"], disc_tc, step)
                terms["d_loss"] = d_terms.pop("loss")
                terms.update(d_terms)
            restarted = (monitor.update(fabric, regularizer, autoencoder, optimizer, generator)
                         if monitor else 0)
            done = step + 1
            progress.update()
            out_of_time, stopping = run.should_stop(tc.max_minutes)
            last = done == tc.max_steps or out_of_time
            if due(done, tc.log_every, last or stopping):
                values = {k: mean_over_processes(fabric, v.mean()) for k, v in terms.items()}
                if monitor is not None:
                    values.update(codebook_usage=monitor.usage(),
                                  perplexity=perplexity(monitor.batch_counts),
                                  codes_restarted=restarted)
                run.log(done, **values, **images.log_values())
                progress.set_postfix(loss=f"{values['loss']:.4f}", refresh=False)
            if due(done, tc.sample_every, last) or (uses_disc and done == lc.disc_start):
                _write_reconstructions(run, autoencoder, preview, done)
            if due(done, tc.checkpoint_every, last or stopping):
                save(done, _final_metadata(fabric, autoencoder, train_data) if last else None)
            if stopping and not last:
                raise run.interrupted(done)
            if last:
                break
    if start >= tc.max_steps:
        log.info("%s is already trained to %d steps", run.checkpoint, tc.max_steps)
    elif fabric.is_global_zero and len(heldout):
        _log_heldout(run, autoencoder.eval(), heldout, done)
    return run.checkpoint


@torch.no_grad()
def encode_posteriors(autoencoder: Autoencoder, data: ImageData, device: torch.device,
                      batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior (μ, σ) of every image, each (N, c, h, w) float32 on the CPU."""
    means, stds = [], []
    for start in range(0, len(data), batch_size):
        posterior = autoencoder.encode(to_model_range(data.images[start:start + batch_size]).to(device))
        means.append(posterior.mean.float().cpu())
        stds.append(posterior.std.float().cpu())
    return torch.cat(means), torch.cat(stds)


def _final_metadata(fabric: Fabric, autoencoder: Autoencoder, train_data: ImageData) -> dict:
    """Latent normalisation measured on the training set (streamed: its first STATS_IMAGES images;
    global s and per channel), stored with the weights."""
    if not fabric.is_global_zero:
        return {}
    was_training = autoencoder.training
    z, _ = encode_posteriors(autoencoder.eval(), train_data, fabric.device)
    autoencoder.train(was_training)
    return {"latent_stats": {"global": LatentStats.measure(z).to_dict(),
                             "per_channel": LatentStats.measure(z, per_channel=True).to_dict()}}


def _log_heldout(run: Run, autoencoder: Autoencoder, heldout: ImageData, step: int) -> None:
    """PSNR, SSIM (and VQ codebook usage) of the held-out split, into metrics.jsonl and the log."""
    x = to_model_range(heldout.images).to(run.fabric.device)
    scores = score_reconstructions(x, reconstruct(autoencoder, x))
    if isinstance(autoencoder, AutoencoderVQ):
        scores["codebook_usage"], scores["perplexity"] = codebook_usage(autoencoder, x)
    run.log(step, **{f"heldout_{k}": v for k, v in scores.items()})
    log.info("held-out reconstruction (%d images): %s", len(heldout),
             ", ".join(f"{k} {v:.4g}" for k, v in scores.items()))


@torch.no_grad()
def _write_reconstructions(run: Run, autoencoder: Autoencoder, x: torch.Tensor, step: int) -> None:
    """Originals (top row) above their reconstructions D(E(x)) (bottom row)."""
    if not run.fabric.is_global_zero:
        return
    was_training = autoencoder.training
    recon = reconstruct(autoencoder.eval(), x)
    autoencoder.train(was_training)
    save_image_grid(to_uint8(torch.cat([x, recon])), run.sample_path(step), ncols=len(x))
