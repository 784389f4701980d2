"""Where the diffusion stage's latents come from, step by step (paper Sec. 3.2: the UNet is trained on
z = E(x) of a frozen first stage).

- `CachedLatents`: small data held in memory; every training image encoded once into its posterior
  moments (μ, σ) (edm2's latent cache); step k's batch is a slice of a seeded permutation.
- `StreamedLatents`: images decoded and augmented in DataLoader workers (`data/stream.py`) and
  encoded per step; memory does not grow with the dataset.

Both give, for step k, this process's share of the global batch as (μ, σ, the batch's ImageData,
row numbers into it): z = s·(μ + σ·n) is drawn by the training step from the step's generator.
"""

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from latentdiff.autoencoder import Autoencoder
from latentdiff.config import DataConfig
from latentdiff.data import ImageData, batch_indices, rank_slice, to_uint8
from latentdiff.data.latent_shards import LatentItems, read_latent_records
from latentdiff.data.stream import Stream, as_image_data, training_records
from latentdiff.errors import UserError
from latentdiff.metrics.features import state_digest
from latentdiff.train.autoencoder import encode_posteriors

MAX_CAPTIONS = 200_000  # streamed: captions a tokenizer learns from
STATS_IMAGES = 256  # streamed: images the latent normalisation is measured on
PREVIEW_IMAGES = 8  # training conditions the preview grid shows


class CachedLatents:
    """Posterior moments of every training image, computed once (N, c, h, w) on the CPU."""

    def __init__(self, autoencoder: Autoencoder, data: ImageData, batch_size: int, seed: int,
                 device: torch.device, rank: int, world_size: int):
        self.means, self.stds = encode_posteriors(autoencoder, data, device)
        self.data, self.batch_size, self.seed = data, batch_size, seed
        self.rank, self.world_size = rank, world_size

    def vocabulary(self) -> ImageData:
        """What the conditioner is built from (a tokenizer learns from its captions)."""
        return self.data

    def log_values(self) -> dict:
        return {}

    def stats_sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The moments the latent normalisation is measured on: all of them."""
        return self.means, self.stds

    def start(self, start: int, stop: int) -> None:
        """Called once, before step `start`."""

    def step(self, step: int) -> tuple[torch.Tensor, torch.Tensor, ImageData, torch.Tensor]:
        index = batch_indices(len(self.data), self.batch_size, step, self.seed)
        index = rank_slice(index, self.rank, self.world_size)
        return self.means[index], self.stds[index], self.data, index


def open_latents(cfg: DataConfig, autoencoder: Autoencoder, batch_size: int, seed: int, rank: int,
                 world_size: int) -> Stream:
    """The stream of a latents folder (`latentdiff encode-latents`), checked against the run: the
    same first stage (weights), image size and, for flips, stored mirrored moments."""
    records = read_latent_records(Path(cfg.path))
    manifest = records.manifest
    if manifest["autoencoder_digest"] != state_digest(autoencoder):
        raise UserError(f"the latents in {cfg.path} were encoded by another first stage "
                        f"({manifest['autoencoder']}); set `autoencoder` to it or encode again")
    if manifest["image_size"] != cfg.image_size:
        raise UserError(f"the latents in {cfg.path} are of {manifest['image_size']}-pixel images; "
                        f"set data.image_size={manifest['image_size']}")
    if cfg.flip and not manifest["flipped"]:
        raise UserError(f"the latents in {cfg.path} have no mirrored images; encode with "
                        "data.flip=true or set data.flip=false")
    if cfg.buckets or cfg.crop != "centre":
        raise UserError("latents are centre crops of one size: set data.buckets=false and "
                        "data.crop=centre")
    train = training_records(len(records), cfg)
    size = manifest["image_size"]
    return Stream(LatentItems(records, cfg.flip, seed), records, train, batch_size, seed,
                  [(size, size)], None, cfg.workers, rank, world_size)


class StreamedLatents:
    """Each step's batch from a `Stream`: images encoded by the frozen first stage on `device`, or
    pre-encoded moments."""

    def __init__(self, autoencoder: Autoencoder, stream: Stream, device: torch.device):
        self.autoencoder, self.stream, self.device = autoencoder, stream, device
        # the first training images (decoded from their latents when pre-encoded): previews, checks
        self.data = self._image_data(stream.examples(stream.train[:PREVIEW_IMAGES]))
        self._batches: Iterator[dict] | None = None
        self._next_step = 0

    def vocabulary(self) -> ImageData:
        """The preview images with every caption of the training records (up to MAX_CAPTIONS, a
        seeded sample): what the conditioner is built from; only the captions are read."""
        records, train = self.stream.records, self.stream.train
        if not records.captions:
            return self.data
        if len(train) > MAX_CAPTIONS:
            train = np.random.default_rng(0).choice(train, MAX_CAPTIONS, replace=False)
        return dataclasses.replace(self.data, captions=tuple(records.captions[i] for i in train))

    def log_values(self) -> dict:
        return self.stream.log_values()

    def _image_data(self, batch: dict) -> ImageData:
        """A batch as ImageData; pre-encoded latents carry no pixels: their posterior means decoded
        (for previews), or empty (B, 0, 0, 0) images during training (the conditioning kinds
        that train on latents read only captions and labels)."""
        if "images" not in batch:
            with torch.no_grad():
                pixels = self.autoencoder.decode(batch["means"].to(self.device)).clamp(-1, 1)
            batch = {**batch, "images": to_uint8(pixels.cpu())}
        return as_image_data(batch, self.stream.records)

    def _moments(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        if "means" in batch:
            return batch["means"], batch["stds"]
        return encode_posteriors(self.autoencoder, ImageData(batch["images"], batch["labels"]),
                                 self.device)

    def stats_sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Moments of up to STATS_IMAGES training images (centre crops, unaugmented)."""
        batch = self.stream.examples(self.stream.train[:STATS_IMAGES])
        moments = [self._moments({k: v[i:i + 64] for k, v in batch.items() if k != "skipped"})
                   for i in range(0, len(batch["captions"]), 64)]
        return torch.cat([m for m, _ in moments]), torch.cat([s for _, s in moments])

    def start(self, start: int, stop: int) -> None:
        self._batches, self._next_step = self.stream.batches(start, stop), start

    def step(self, step: int) -> tuple[torch.Tensor, torch.Tensor, ImageData, torch.Tensor]:
        if step != self._next_step:
            raise RuntimeError(f"streamed batches are read in order: step {step} asked, "
                               f"{self._next_step} next")
        batch = next(self._batches)
        self._next_step += 1
        mean, std = self._moments(batch)
        if "images" not in batch:
            batch = {**batch, "images": torch.zeros((len(mean), 0, 0, 0), dtype=torch.uint8)}
        return mean, std, as_image_data(batch, self.stream.records), torch.arange(len(mean))
