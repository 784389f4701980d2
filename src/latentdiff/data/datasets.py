"""Datasets as in-memory uint8 image tensors with optional class labels.

Sources: scikit-learn's handwritten digits (bundled, the default), MNIST-format IDX / .npz files,
and folders of PNG/JPEG images (class sub-folders optional). Every image is resized to the
configured square size once, at load. Datasets yield raw pixels (`ImageData`); they never normalise
for a model (`to_model_range` does, at the point of use). `load_dataset` picks the configured
source, here or in `photos.py`, `emoji.py`, `shapes.py`.
"""

import dataclasses
import gzip
import logging
import struct
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from latentdiff.config import DataConfig
from latentdiff.data.emoji import load_emoji
from latentdiff.data.image_data import ImageData
from latentdiff.data.photos import load_photos
from latentdiff.data.records import DECODE_ERRORS, decode, folder_files
from latentdiff.data.stream import resize_crop
from latentdiff.data.shapes import load_shapes
from latentdiff.errors import UserError
from latentdiff.progress import progress

log = logging.getLogger(__name__)


def load_dataset(cfg: DataConfig) -> ImageData:
    """The configured dataset at `cfg.image_size`, with `cfg.channels` channels when set."""
    if cfg.dataset == "digits":
        data = load_digits(cfg.image_size)
    elif cfg.dataset == "photos":
        data = load_photos(cfg.image_size)
    elif cfg.dataset == "emoji":
        data, names = load_emoji(cfg.image_size, cfg.path)
        data = dataclasses.replace(data, captions=tuple(names))
    elif cfg.dataset == "shapes":
        data = load_shapes(cfg.image_size, cfg.holdout)
    elif cfg.dataset == "mnist":
        data = load_mnist(Path(cfg.path), cfg.image_size)
    else:
        data = load_image_folder(Path(cfg.path), cfg.image_size, cfg.channels or 3,
                                 cfg.caption_field)
    if cfg.channels is not None and cfg.channels != data.channels:
        data = dataclasses.replace(data, images=_convert_channels(data.images, cfg.channels))
    return data


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, h, w) float in [0, 1] → (N, C, size, size) uint8; bicubic, antialiased when
    shrinking."""
    if images.shape[-1] != size or images.shape[-2] != size:
        images = F.interpolate(images, size=(size, size), mode="bicubic", align_corners=False,
                               antialias=size < images.shape[-1])
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def _convert_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    if images.shape[1] == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    if images.shape[1] == 3 and channels == 1:  # ITU-R 601 luma, as PIL's "L"
        weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (images.float() * weights).sum(1, keepdim=True).round().to(torch.uint8)
    raise UserError(f"data.channels={channels}: cannot convert {images.shape[1]}-channel "
                    "images; use 1 or 3")


def load_digits(image_size: int = 32) -> ImageData:
    """scikit-learn's 1,797 handwritten 8×8 digits (values 0..16), upsampled bicubically to
    image_size."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    # (1797, 1, 8, 8) in [0, 1]
    images = torch.from_numpy(digits.images).float().unsqueeze(1) / 16.0
    labels = torch.from_numpy(digits.target).long()
    return ImageData(_resize(images, image_size), labels, tuple(str(d) for d in range(10)))


# IDX format (LeCun et al.): magic = 0x00 0x00 <dtype 0x08 = uint8> <ndim>, then ndim big-endian
# uint32 sizes.
def read_idx(path: Path) -> np.ndarray:
    """An uncompressed or gzip-compressed IDX file → uint8 array of its declared shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise UserError(f"cannot read IDX file {path}: {e}; re-download or decompress it") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UserError(f"{path} is not a uint8 IDX file (bad magic number); give "
                        "MNIST-format idx files")
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise UserError(f"{path} is truncated: header says {shape}, file holds {data.size} values; "
                        "re-download it")
    return data.reshape(shape)


def _find_idx(folder: Path, kind: str, ndim: int) -> Path:
    candidates = sorted(folder.glob(f"*{kind}*idx{ndim}*"),
                        key=lambda p: ("train" not in p.name, p.name))
    if not candidates:
        raise UserError(f"no *{kind}*idx{ndim}* file in {folder}; give a folder with MNIST-format "
                        "IDX files or an .npz")
    return candidates[0]


def load_mnist(path: Path, image_size: int = 32) -> ImageData:
    """MNIST-format digits from a folder of IDX files (images idx3, labels idx1; .gz or not) or an
    .npz file (arrays images/labels, x/y or x_train/y_train), resized to image_size."""
    if not path.exists():
        raise UserError(f"data.path {str(path)!r} does not exist; point it at MNIST IDX "
                        "files or an .npz")
    if path.suffix == ".npz":
        images, labels = _read_npz(path)
    else:
        folder = path if path.is_dir() else path.parent
        images, labels = read_idx(_find_idx(folder, "images", 3)), read_idx(_find_idx(folder, "labels", 1))
    if len(images) != len(labels):
        raise UserError(f"{path}: {len(images)} images but {len(labels)} labels; use "
                        "matching files")
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)  # (N, 1, 28, 28)
    y = torch.from_numpy(labels.astype(np.int64))
    return ImageData(_resize(x, image_size), y, tuple(str(d) for d in range(int(y.max()) + 1)))


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        arrays = np.load(path)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {path}: {e}") from None
    for x_key, y_key in (("images", "labels"), ("x", "y"), ("x_train", "y_train")):
        if x_key in arrays and y_key in arrays:
            return arrays[x_key], arrays[y_key]
    raise UserError(f"{path} has arrays {list(arrays)}; expected images/labels, x/y or "
                    "x_train/y_train")


def load_image_folder(root: Path, image_size: int, channels: int = 3,
                      caption_field: str = "text") -> ImageData:
    """All images under `root` (recursive). When every image sits in a first-level sub-folder, the
    sub-folders are the classes (sorted by name); otherwise the set is unlabelled. When the folder
    has captions (metadata.jsonl / metadata.csv, or sidecar .txt files: `captions.py`), every image
    gets its caption and images without one are skipped. Unreadable or truncated files are skipped,
    counted and reported in one warning."""
    files, captions, class_names = folder_files(root, caption_field)
    labelled = bool(class_names)
    images, labels, kept, bad = [], [], [], []
    for path in progress(files, desc=f"reading {root.name}", disable=len(files) < 500, leave=False):
        try:
            images.append(resize_crop(decode(path.read_bytes(), "L" if channels == 1 else "RGB"),
                                      image_size, image_size))
        except DECODE_ERRORS as e:
            bad.append((path, e))
            continue
        labels.append(class_names.index(path.relative_to(root).parts[0]) if labelled else -1)
        kept.append(path)
    if bad:
        log.warning("skipped %d unreadable image(s) of %d under %s (first: %s: %s)",
                    len(bad), len(files), root, bad[0][0].name, bad[0][1])
    if not images:
        raise UserError(f"none of the {len(files)} image files under {root} could be read; "
                        "check the files")
    return ImageData(torch.stack(images), torch.tensor(labels, dtype=torch.long), class_names,
                     captions=() if captions is None else tuple(captions[p] for p in kept))
