"""Streamed training batches: images decoded and augmented in DataLoader worker processes from an
index of records (`records.py`), in an order that is a pure function of (seed, step).

- **Order.** The global batch of step k is a slice of a seeded per-epoch permutation of the training
  records (`batches.batch_indices`), or with aspect-ratio buckets, one batch of a seeded per-epoch
  shuffle of same-bucket batches (`BucketSchedule`). Rank r of R reads its contiguous 1/R of it, so
  ranks read disjoint samples and the global batch equals the one-process run's; `--resume` at
  step k continues with exactly the batches an uninterrupted run sees.
- **Augmentation** (`data.crop`, `data.flip`): the shorter side is resized to cover the target
  shape, then a centre or random crop; an optional horizontal flip, never for a caption that says
  left or right. All draws come from a generator seeded by (seed, step, record).
- **Buckets** (`data.buckets`): shapes of about image_size² pixels with sides a multiple of the
  model's (aspect 1:2 … 2:1); each image goes to the bucket nearest its aspect ratio, and every
  batch is one shape.
- **Bad files** are never fatal: a record that does not decode is replaced by the next training
  record that does, and counted.
"""

import gc
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from latentdiff.data.batches import batch_indices, rank_slice
from latentdiff.data.image_data import ImageData
from latentdiff.config import DataConfig
from latentdiff.data.records import DECODE_ERRORS, Records, decode, image_size_of, read_records
from latentdiff.errors import UserError

MAX_ASPECT = 2.0
_SIDES = re.compile(r"\b(left|right)\b", re.IGNORECASE)


def resize_crop(image: Image.Image, height: int, width: int,
                position: tuple[float, float] = (0.5, 0.5)) -> torch.Tensor:
    """Resize (bicubic) so that the image covers height × width with its aspect ratio kept, then
    crop at `position` ((0, 0) top left … (1, 1) bottom right; centre by default) → (C, H, W)
    uint8."""
    scale = max(width / image.width, height / image.height)
    w, h = max(width, round(image.width * scale)), max(height, round(image.height * scale))
    image = image.resize((w, h), Image.Resampling.BICUBIC)
    left, top = round((w - width) * position[0]), round((h - height) * position[1])
    image = image.crop((left, top, left + width, top + height))
    array = np.asarray(image, dtype=np.uint8).reshape(height, width, -1)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def bucket_shapes(image_size: int, multiple: int) -> list[tuple[int, int]]:
    """(height, width) shapes of about image_size² pixels, sides multiples of `multiple`, aspect
    ratio within 1:2 … 2:1, the square included; sorted by width."""
    area, shapes = image_size * image_size, {(image_size, image_size)}
    for width in range(multiple, 2 * image_size + 1, multiple):
        height = max(multiple, round(area / width / multiple) * multiple)
        if 1 / MAX_ASPECT <= width / height <= MAX_ASPECT:
            shapes.add((height, width))
    return sorted(shapes, key=lambda s: s[1])


def nearest_bucket(sizes: np.ndarray, shapes: list[tuple[int, int]]) -> np.ndarray:
    """Bucket number of each (width, height) in `sizes` (N, 2): the nearest aspect ratio in log."""
    ratios = np.log(np.array([w / h for h, w in shapes]))
    aspect = np.log(sizes[:, 0] / np.maximum(sizes[:, 1], 1))
    return np.abs(aspect[:, None] - ratios[None, :]).argmin(1)


class BucketSchedule:
    """The batches of an epoch with buckets: each bucket's records in the epoch's permutation order,
    cut into full global batches (the rest wait for a later epoch's permutation), all batches in a
    seeded random order. A pure function of (seed, epoch); the last epoch's list is kept."""

    def __init__(self, bucket_of: np.ndarray, batch_size: int, seed: int):
        self.bucket_of, self.batch_size, self.seed = bucket_of, batch_size, seed
        counts = np.bincount(bucket_of)
        self.per_epoch = int((counts // batch_size).sum())
        if self.per_epoch == 0:
            raise UserError(f"no aspect-ratio bucket holds a full batch of {batch_size} images "
                            f"(largest: {counts.max()}); lower train.batch_size or turn off "
                            "data.buckets")
        self._epoch: tuple[int, list[np.ndarray]] | None = None

    def batches(self, epoch: int) -> list[np.ndarray]:
        if self._epoch is None or self._epoch[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            order = rng.permutation(len(self.bucket_of))
            batches = []
            for bucket in np.unique(self.bucket_of):
                members = order[self.bucket_of[order] == bucket]
                full = len(members) // self.batch_size * self.batch_size
                batches.extend(members[:full].reshape(-1, self.batch_size))
            self._epoch = epoch, [batches[i] for i in rng.permutation(len(batches))]
        return self._epoch[1]

    def __call__(self, step: int) -> torch.Tensor:
        epoch, k = divmod(step, self.per_epoch)
        return torch.from_numpy(self.batches(epoch)[k].copy())


@dataclass(frozen=True)
class Augment:
    """crop: "centre" or "random"; flip: a horizontal flip with probability ½ (not for captions that
    say left or right); mode: PIL's "RGB" or "L"."""

    crop: str = "centre"
    flip: bool = False
    mode: str = "RGB"


class StreamedImages(Dataset):
    """Item (record, step, (H, W)) → {"images": (C, H, W) uint8, "captions", "labels", "skipped"}:
    record decoded, resized and cropped to H × W, augmented from the generator of (seed, step,
    record). `pool`: the sorted record numbers items come from (the training split); a record that
    does not decode is replaced by the next one of the pool that does ("skipped" counts them), so a
    held-out image never stands in for a training one."""

    def __init__(self, records: Records, augment: Augment, seed: int, pool: np.ndarray):
        self.records, self.augment, self.seed, self.pool = records, augment, seed, pool

    def __len__(self) -> int:
        return len(self.pool)

    def __getitem__(self, key: tuple[int, int, tuple[int, int]]) -> dict:
        record, step, (height, width) = key
        start = int(np.searchsorted(self.pool, record))
        for skipped in range(len(self.pool)):
            i = int(self.pool[(start + skipped) % len(self.pool)])
            try:
                image = decode(self.records.read(i), self.augment.mode)
            except DECODE_ERRORS:
                continue
            return self._sample(i, step, image, height, width, skipped)
        raise UserError("no record of the dataset decodes as an image; check the data")

    def unaugmented(self, pool: np.ndarray) -> "StreamedImages":
        return StreamedImages(self.records, Augment(mode=self.augment.mode), self.seed, pool)

    def _sample(self, i: int, step: int, image: Image.Image, height: int, width: int,
                skipped: int) -> dict:
        draws = torch.rand(3, generator=sample_generator(self.seed, step, i)).tolist()
        position = (draws[0], draws[1]) if self.augment.crop == "random" else (0.5, 0.5)
        tensor = resize_crop(image, height, width, position)
        caption = self.records.captions[i] if self.records.captions else ""
        if self.augment.flip and draws[2] < 0.5 and flippable(caption):
            tensor = tensor.flip(-1)
        return {"images": tensor, "captions": caption, "labels": self.records.label(i),
                "skipped": skipped}


def sample_generator(seed: int, step: int, record: int) -> torch.Generator:
    """The generator of one sample's augmentation at one step."""
    state = np.random.SeedSequence([seed, step, record]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)


def flippable(caption: str) -> bool:
    """Whether a horizontal flip keeps the caption true (it names neither left nor right)."""
    return not _SIDES.search(caption)


def collate(samples: list[dict]) -> dict:
    """Items → a batch: tensors stacked, strings as a tuple, numbers as a tensor, `skipped`
    summed."""
    batch = {}
    for key, value in samples[0].items():
        values = [s[key] for s in samples]
        if key == "skipped":
            batch[key] = sum(values)
        elif isinstance(value, torch.Tensor):
            batch[key] = torch.stack(values)
        elif isinstance(value, str):
            batch[key] = tuple(values)
        else:
            batch[key] = torch.tensor(values)
    return batch


def as_image_data(batch: dict, records: Records) -> ImageData:
    return ImageData(batch["images"], batch["labels"], records.class_names,
                     captions=batch["captions"] if records.captions else ())


class Stream:
    """The rank's share of each step's global batch for steps start … stop − 1, read by `workers`
    DataLoader processes (0: in this process) from `dataset` (items keyed (record, step, shape)).

    records: the dataset's index; train: the record numbers trained on (the held-out ones left
    out); shapes: the bucket shapes (one: no buckets); bucket_of: each training record's bucket."""

    def __init__(self, dataset: Dataset, records, train: np.ndarray, batch_size: int, seed: int,
                 shapes: list[tuple[int, int]], bucket_of: np.ndarray | None, workers: int,
                 rank: int = 0, world_size: int = 1):
        self.dataset, self.records, self.train = dataset, records, train
        self.batch_size, self.seed, self.shapes = batch_size, seed, shapes
        self.workers, self.rank, self.world_size = workers, rank, world_size
        self.schedule = BucketSchedule(bucket_of, batch_size, seed) if bucket_of is not None else None
        self.skipped = 0
        self.waited = 0.0  # seconds spent waiting for batches
        self._logged = (0.0, time.perf_counter())  # (waited, clock) at the last log_values

    def global_batch(self, step: int) -> tuple[torch.Tensor, tuple[int, int]]:
        """(record numbers (B,), (H, W)) of step `step`'s global batch."""
        if self.schedule is None:
            positions = batch_indices(len(self.train), self.batch_size, step, self.seed)
            return torch.from_numpy(self.train[positions.numpy()]), self.shapes[0]
        positions = self.schedule(step)
        bucket = int(self.schedule.bucket_of[positions[0]])
        return torch.from_numpy(self.train[positions.numpy()]), self.shapes[bucket]

    def keys(self, start: int, stop: int) -> Iterator[list[tuple[int, int, tuple[int, int]]]]:
        for step in range(start, stop):
            records, shape = self.global_batch(step)
            share = rank_slice(records, self.rank, self.world_size)
            yield [(int(r), step, shape) for r in share]

    def batches(self, start: int, stop: int) -> Iterator[dict]:
        """This rank's batches of steps start … stop − 1, in order (`collate`'s dicts)."""
        loader = DataLoader(self.dataset, batch_sampler=_Keys(self, start, stop),
                            num_workers=self.workers, collate_fn=collate,
                            prefetch_factor=4 if self.workers else None)
        if self.workers:
            # The workers are forked: pages they share with this process are copied as soon as
            # either side writes to them, and the cyclic collector writes to every object it scans.
            # Frozen, the objects made so far (the run's setup) are never scanned again, so memory
            # stays shared; measured, the training processes then use the same memory at 1k and
            # 50k images (reports/stream-scale). Unreachable cycles among them are not freed.
            gc.freeze()
        iterator = iter(loader)
        self._logged = self.waited, time.perf_counter()
        while True:
            began = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                return
            self.waited += time.perf_counter() - began
            self.skipped += batch["skipped"]
            yield batch

    def log_values(self) -> dict:
        """data_wait: the fraction of the time since the last call (or since `batches` began) spent
        waiting for batches; skipped_files: records that did not decode so far."""
        now = time.perf_counter()
        fraction = (self.waited - self._logged[0]) / max(now - self._logged[1], 1e-9)
        self._logged = self.waited, now
        return {"data_wait": round(fraction, 4), "skipped_files": self.skipped}

    def examples(self, records: np.ndarray) -> dict:
        """The records `records`, unaugmented, at the squarest shape: previews, held-out images,
        statistics."""
        plain = self.dataset.unaugmented(np.sort(records))
        square = min(self.shapes, key=lambda s: abs(math.log(s[1] / s[0])))
        return collate([plain[(int(r), 0, square)] for r in records])

    def heldout(self) -> np.ndarray:
        """The record numbers held out of training."""
        return np.setdiff1d(np.arange(len(self.records)), self.train)


class _Keys:
    """The DataLoader's batch sampler: one list of item keys per step."""

    def __init__(self, stream: Stream, start: int, stop: int):
        self.stream, self.start, self.stop = stream, start, stop

    def __iter__(self):
        return self.stream.keys(self.start, self.stop)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def record_sizes(records: Records, ids: np.ndarray) -> np.ndarray:
    """(width, height) of records `ids` (N, 2) from their headers; (1, 1) for one that does not
    open (it is replaced when read)."""
    sizes = np.ones((len(ids), 2), dtype=np.int64)
    for row, i in enumerate(ids):
        try:
            sizes[row] = image_size_of(records.read(int(i)))
        except DECODE_ERRORS:
            pass
    return sizes


def training_records(n: int, cfg: DataConfig) -> np.ndarray:
    """The record numbers trained on: all but `data.holdout` drawn by `data.split_seed`, sorted."""
    if cfg.holdout >= n:
        raise UserError(f"data.holdout={cfg.holdout} leaves no training images out of {n}; "
                        "lower it")
    return np.sort(np.random.default_rng(cfg.split_seed).permutation(n)[cfg.holdout:])


def open_stream(cfg: DataConfig, batch_size: int, seed: int, multiple: int, rank: int = 0,
                world_size: int = 1) -> Stream:
    """The configured dataset streamed (data.dataset folder with data.stream, webdataset, hf):
    its index, the seeded held-out split (`data.holdout` records never trained on), the buckets."""
    records = read_records(cfg)
    train = training_records(len(records), cfg)
    shapes, bucket_of = [(cfg.image_size, cfg.image_size)], None
    if cfg.buckets:
        shapes = bucket_shapes(cfg.image_size, multiple)
        bucket_of = nearest_bucket(record_sizes(records, train), shapes)
    augment = Augment(cfg.crop, cfg.flip, "L" if cfg.channels == 1 else "RGB")
    dataset = StreamedImages(records, augment, seed, train)
    return Stream(dataset, records, train, batch_size, seed, shapes, bucket_of, cfg.workers, rank,
                  world_size)
