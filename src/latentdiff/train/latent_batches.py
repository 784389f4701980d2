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
import time
from collections.abc import Iterator

import numpy as np
import torch

from latentdiff.autoencoder import Autoencoder
from latentdiff.data import ImageData, batch_indices, rank_slice, to_model_range
from latentdiff.data.stream import ImageStream
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
        self.skipped, self.waited = 0, 0.0

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


class StreamedLatents:
    """Each step's images from an `ImageStream`, encoded by the frozen first stage on `device`."""

    def __init__(self, autoencoder: Autoencoder, stream: ImageStream, device: torch.device):
        self.autoencoder, self.stream, self.device = autoencoder, stream, device
        self.data = stream.examples(PREVIEW_IMAGES)  # the first training images: previews, checks
        self._batches: Iterator[ImageData] | None = None
        self._next_step = 0
        self._logged = (0.0, time.perf_counter())  # (data wait, clock) at the last log

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
        """data_wait: the fraction of the time since the last log spent waiting for batches;
        skipped_files: records that did not decode so far."""
        waited, now = self.stream.waited, time.perf_counter()
        fraction = (waited - self._logged[0]) / max(now - self._logged[1], 1e-9)
        self._logged = waited, now
        return {"data_wait": round(fraction, 4), "skipped_files": self.stream.skipped}

    def _encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            posterior = self.autoencoder.encode(to_model_range(images).to(self.device))
        return posterior.mean.float().cpu(), posterior.std.float().cpu()

    def stats_sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Moments of up to STATS_IMAGES training images (centre crops, unaugmented)."""
        images = self.stream.examples(STATS_IMAGES).images
        moments = [self._encode(images[i:i + 64]) for i in range(0, len(images), 64)]
        return torch.cat([m for m, _ in moments]), torch.cat([s for _, s in moments])

    def start(self, start: int, stop: int) -> None:
        self._batches, self._next_step = self.stream.batches(start, stop), start
        self._logged = (self.stream.waited, time.perf_counter())

    def step(self, step: int) -> tuple[torch.Tensor, torch.Tensor, ImageData, torch.Tensor]:
        if step != self._next_step:
            raise RuntimeError(f"streamed batches are read in order: step {step} asked, "
                               f"{self._next_step} next")
        data = next(self._batches)
        self._next_step += 1
        mean, std = self._encode(data.images)
        return mean, std, data, torch.arange(len(data))
