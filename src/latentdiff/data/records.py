"""Datasets read one image at a time: an index of N records (where each encoded image lies, its
caption and class label) that DataLoader workers decode from, so that memory does not grow with N.

Three sources, in the formats text-to-image data already comes in (`data.dataset`):

- `folder`: image files under a folder; captions from metadata.jsonl / metadata.csv or sidecar .txt
  files (`captions.py`); first-level sub-folders are classes.
- `webdataset`: WebDataset tar shards (`shards.py`): members grouped by key (`0001.jpg`, `0001.txt`,
  `0001.json`, `0001.cls`); the image is the first member with one of `data.image_field`'s
  extensions, the caption the `.txt` member or the `.json` member's `data.caption_field`, the class
  the `.cls` member.
- `hf`: a Hugging Face `datasets` dataset on disk (`save_to_disk` folder, or parquet files); the
  image column `data.image_field`, the caption column `data.caption_field`, a `ClassLabel` column
  named `label` for classes.
"""

import io
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from latentdiff.config import DataConfig
from latentdiff.data.captions import read_captions
from latentdiff.errors import UserError

log = logging.getLogger(__name__)
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff"}
WEBDATASET_IMAGES = "jpg;jpeg;png;webp"
HF_IMAGES = "image"
# what a corrupt or truncated image raises when PIL decodes it
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


class Strings(Sequence):
    """An immutable sequence of strings kept in one UTF-8 buffer with offsets. Reading one touches no
    Python object of the others, so DataLoader workers forked from the training process keep
    sharing its pages (a tuple of N strings would be copied into each worker page by page, as
    reference counts are written): an index of millions of captions costs each worker nothing."""

    def __init__(self, values: Iterable[str] = ()):
        encoded = [v.encode("utf-8") for v in values]
        self._offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=self._offsets[1:])
        self._buffer = np.frombuffer(b"".join(encoded), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        return self._buffer[self._offsets[i]:self._offsets[i + 1]].tobytes().decode("utf-8")

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None


@dataclass(frozen=True)
class Records:
    """N images stored as byte ranges of files: record i is `length[i]` bytes at `offset[i]` of
    `files[file[i]]` (offset −1: the whole file). captions: one per record, or none when the data
    has none; labels (N,) int64, −1 when unlabelled; class_names: () when unlabelled."""

    files: Strings
    file: np.ndarray
    offset: np.ndarray
    length: np.ndarray
    captions: Strings = field(default_factory=Strings)
    labels: np.ndarray | None = None
    class_names: tuple[str, ...] = ()
    table: object = field(default=None, compare=False)  # hf: the Arrow-backed dataset

    def __len__(self) -> int:
        return len(self.file)

    def label(self, i: int) -> int:
        return -1 if self.labels is None else int(self.labels[i])

    def name(self, i: int) -> str:
        """Where record i lies, for messages."""
        if self.table is not None:
            return f"row {i}"
        where = self.files[self.file[i]]
        return where if self.offset[i] < 0 else f"{where} @ {self.offset[i]}"

    def read(self, i: int) -> bytes:
        """The encoded image of record i."""
        if self.table is not None:
            value = self.table[int(i)][self.files[0]]
            if value.get("bytes") is not None:
                return value["bytes"]
            return Path(value["path"]).read_bytes()
        with open(self.files[self.file[i]], "rb") as f:
            if self.offset[i] < 0:
                return f.read()
            f.seek(int(self.offset[i]))
            return f.read(int(self.length[i]))


def decode(data: bytes, mode: str) -> Image.Image:
    """Bytes → a fully decoded PIL image in `mode` ("RGB" or "L"); truncation raises here."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.convert(mode)


def image_size_of(data: bytes) -> tuple[int, int]:
    """(width, height) from the image header alone."""
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def read_records(cfg: DataConfig) -> Records:
    """The index of the configured streamed dataset (folder, webdataset or hf)."""
    if cfg.dataset == "webdataset":
        from latentdiff.data.shards import webdataset_records

        return webdataset_records(cfg.path, cfg.image_field or WEBDATASET_IMAGES, cfg.caption_field)
    if cfg.dataset == "hf":
        return hf_records(Path(cfg.path), cfg.image_field or HF_IMAGES, cfg.caption_field)
    return folder_records(Path(cfg.path), cfg.caption_field)


def image_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS
                  and p.is_file())


def folder_files(root: Path, caption_field: str) -> tuple[list[Path], dict | None, tuple[str, ...]]:
    """(image files, {file: caption} or None, class names) of an image folder: images without a
    caption are skipped (counted in one warning) when the folder has captions; classes are the
    first-level sub-folders when every image sits in one."""
    if not root.is_dir():
        raise UserError(f"data.path {str(root)!r} is not a folder; point it at a folder of "
                        "PNG/JPEG images")
    files = image_files(root)
    if not files:
        kinds = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise UserError(f"no images ({kinds}) found under {root}; add some or fix data.path")
    captions = read_captions(root, files, caption_field)
    if captions is not None:
        uncaptioned = [p for p in files if p not in captions]
        files = [p for p in files if p in captions]
        if uncaptioned:
            log.warning("skipped %d image(s) without a caption of %d under %s (first: %s)",
                        len(uncaptioned), len(files) + len(uncaptioned), root, uncaptioned[0])
        if not files:
            raise UserError(f"no image under {root} has a caption; check file_name in the "
                            "metadata or the .txt files")
    labelled = all(len(p.relative_to(root).parts) >= 2 for p in files)
    class_names = tuple(sorted({p.relative_to(root).parts[0] for p in files})) if labelled else ()
    return files, captions, class_names


def folder_records(root: Path, caption_field: str = "text") -> Records:
    files, captions, class_names = folder_files(root, caption_field)
    n = len(files)
    labels = None
    if class_names:
        labels = np.array([class_names.index(p.relative_to(root).parts[0]) for p in files])
    return Records(Strings(str(p) for p in files), np.arange(n, dtype=np.int64),
                   np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=np.int64),
                   Strings(captions[p] for p in files) if captions is not None else Strings(),
                   labels, class_names)


def hf_records(path: Path, image_field: str, caption_field: str) -> Records:
    """A `datasets` dataset saved with `save_to_disk` (its "train" split when it is a
    DatasetDict), or the parquet files at `path` (a file or a folder of them); memory-mapped, so its
    size does not count against memory."""
    try:
        import datasets
    except ImportError:
        raise UserError("data.dataset=hf needs the `datasets` library; pip install "
                        "'latentdiff[data]'") from None
    if not path.exists():
        raise UserError(f"data.path {str(path)!r} does not exist; point it at a save_to_disk "
                        "folder or parquet files")
    parquet = [path] if path.suffix == ".parquet" else sorted(path.rglob("*.parquet"))
    try:
        if parquet and not (path / "dataset_info.json").exists() and not (
                path / "dataset_dict.json").exists():
            table = datasets.Dataset.from_parquet([str(p) for p in parquet])
        else:
            table = datasets.load_from_disk(str(path))
    except (OSError, ValueError, FileNotFoundError) as e:
        raise UserError(f"cannot read the Hugging Face dataset at {path}: "
                        f"{str(e).splitlines()[0]}") from None
    if isinstance(table, datasets.DatasetDict):
        if "train" not in table:
            raise UserError(f"{path} has splits {', '.join(table)} but no train split; save the "
                            "training split")
        table = table["train"]
    columns = list(table.column_names)
    if image_field not in columns:
        raise UserError(f"data.image_field={image_field} is not a column of {path} (its columns: "
                        f"{', '.join(columns)}); set data.image_field")
    table = table.cast_column(image_field, datasets.Image(decode=False))
    n = len(table)
    captions = Strings()
    if caption_field in columns:
        captions = Strings("" if c is None else str(c).strip() for c in table[caption_field])
    labels, class_names = None, ()
    feature = table.features.get("label")
    if isinstance(feature, datasets.ClassLabel):
        labels, class_names = np.asarray(table["label"], dtype=np.int64), tuple(feature.names)
    zeros = np.zeros(n, dtype=np.int64)
    return Records(Strings([image_field]), zeros, zeros - 1, zeros, captions, labels, class_names,
                   table=table)
