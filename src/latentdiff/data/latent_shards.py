"""Pre-encoded latents: the first stage's posterior moments of a dataset, written once to shards by
`latentdiff encode-latents` and read by `latentdiff train` instead of images
(`data.dataset: latents`), so that the encoder's cost is paid once rather than every epoch.

A latents folder:

- `latents-NNNNNN.safetensors`: `mean` (n, c, h, w) float16 and, for a KL first stage, `std`; with
  flips also `mean_flipped` / `std_flipped`, the moments of the mirrored image (a flip in latent
  space is then exact, not the approximation of mirroring z). For a VQ first stage `mean` is the
  pre-quantisation latent the diffusion model is trained on (quantisation is part of its decoder,
  paper Sec. 3.1). The captions and class labels of its rows are in the file's metadata.
- `settings.json`: what the shards were made from (first stage, size, data), written first;
- `manifest.json`: written last, when every shard is complete: the shards and their row counts.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from torch.utils.data import Dataset

from latentdiff.data.records import Strings
from latentdiff.data.stream import flippable, sample_generator
from latentdiff.errors import UserError

MANIFEST, SETTINGS = "manifest.json", "settings.json"
FORMAT = "latentdiff-latents-1"


def shard_name(number: int) -> str:
    return f"latents-{number:06d}.safetensors"


@dataclass(frozen=True)
class LatentRecords:
    """N encoded images: record i is row `row[i]` of shard `files[file[i]]`. captions: one per
    record or (); labels (N,) int64 or None; manifest: the folder's manifest.json."""

    files: tuple[str, ...]
    file: np.ndarray
    row: np.ndarray
    captions: Strings
    labels: np.ndarray | None
    class_names: tuple[str, ...]
    manifest: dict

    def __len__(self) -> int:
        return len(self.file)

    def label(self, i: int) -> int:
        return -1 if self.labels is None else int(self.labels[i])


def read_latent_records(folder: Path) -> LatentRecords:
    """The index of a finished latents folder; a one-line error for an unfinished or foreign one."""
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise UserError(f"{folder} holds no finished latents (no {MANIFEST}); run `latentdiff "
                        "encode-latents DATA AUTOENCODER OUT` to make or complete them")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != FORMAT:
        raise UserError(f"{manifest_path} is not a latentdiff latents manifest ({FORMAT})")
    files, file, row, captions, labels = [], [], [], [], []
    for number, shard in enumerate(manifest["shards"]):
        path = folder / shard["name"]
        try:
            with safe_open(str(path), "pt") as f:
                metadata = f.metadata() or {}
        except (OSError, RuntimeError) as e:
            raise UserError(f"cannot read {path}: {e}; encode it again (delete it and rerun "
                            "encode-latents)") from None
        count = int(shard["count"])
        files.append(str(path))
        file.extend([number] * count)
        row.extend(range(count))
        captions.extend(json.loads(metadata.get("captions", "[]")) or [""] * count)
        labels.extend(json.loads(metadata.get("labels", "[]")) or [-1] * count)
    labelled = bool(manifest.get("class_names"))
    return LatentRecords(tuple(files), np.asarray(file, dtype=np.int64),
                         np.asarray(row, dtype=np.int64),
                         Strings(captions) if manifest.get("captions") else Strings(),
                         np.asarray(labels, dtype=np.int64) if labelled else None,
                         tuple(manifest.get("class_names", ())), manifest)


class LatentItems(Dataset):
    """Item (record, step, shape) → {"means", "stds": (c, h, w) float32, "captions", "labels",
    "skipped": 0}; with `flip`, the mirrored image's moments with probability ½ (drawn from the
    generator of (seed, step, record); never for a caption that says left or right)."""

    def __init__(self, records: LatentRecords, flip: bool, seed: int):
        self.records, self.flip, self.seed = records, flip, seed
        self._open: dict[int, object] = {}  # shard number → its safetensors handle, per process

    def __len__(self) -> int:
        return len(self.records)

    def unaugmented(self, pool: np.ndarray) -> "LatentItems":
        """Without flips (every record reads; `pool` is for the image datasets' replacements)."""
        return LatentItems(self.records, False, self.seed)

    def _shard(self, number: int):
        if number not in self._open:
            self._open[number] = safe_open(self.records.files[number], "pt")
        return self._open[number]

    def __getitem__(self, key: tuple[int, int, tuple[int, int]]) -> dict:
        i, step, _ = key
        caption = self.records.captions[i] if self.records.captions else ""
        flipped = (self.flip and torch.rand(1, generator=sample_generator(self.seed, step, i)) < 0.5
                   and flippable(caption))
        shard, row = self._shard(int(self.records.file[i])), int(self.records.row[i])
        suffix = "_flipped" if flipped else ""
        mean = shard.get_slice("mean" + suffix)[row:row + 1][0].float()
        std = (shard.get_slice("std" + suffix)[row:row + 1][0].float()
               if self.records.manifest["has_std"] else torch.zeros_like(mean))
        return {"means": mean, "stds": std, "captions": caption, "labels": self.records.label(i),
                "skipped": 0}
