"""`ImageData`: a dataset as in-memory uint8 image tensors with optional labels and conditioning
ground truth; its held-out split, and the conversion between stored pixels and the model range [-1,
1]."""

import dataclasses
from dataclasses import dataclass

import torch

from latentdiff.errors import UserError


@dataclass(frozen=True)
class ImageData:
    """images: (N, C, H, W) uint8; labels: (N,) int64, −1 when unlabelled; class_names: () when
    unlabelled. heldout_start: when set, images[heldout_start:] are the dataset's own held-out split
    (e.g. spatially disjoint photo crops) and `split_holdout` uses it instead of a random one.
    Ground truth for conditioning, where the dataset has it: captions (one per image), boxes (one
    (n_i, 5) array of x0, y0, x1, y1, class in [0, 1] per image) and semantic maps (N, H, W) uint8
    with `semantic_classes` classes."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...] = ()
    heldout_start: int | None = None
    captions: tuple[str, ...] = ()
    boxes: tuple = ()
    semantic: torch.Tensor | None = None
    semantic_classes: int = 0

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def num_classes(self) -> int | None:
        return len(self.class_names) or None

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    def subset(self, index: torch.Tensor) -> "ImageData":
        rows = index.tolist()
        return dataclasses.replace(
            self, images=self.images[index], labels=self.labels[index], heldout_start=None,
            captions=tuple(self.captions[i] for i in rows) if self.captions else (),
            boxes=tuple(self.boxes[i] for i in rows) if self.boxes else (),
            semantic=None if self.semantic is None else self.semantic[index])

    def sample(self, n: int, seed: int = 0) -> "ImageData":
        """min(n, N) images drawn at random without replacement (seeded): a representative part even
        when the data is ordered (emoji by Unicode group, for example), unlike the first n."""
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        return self.subset(order[:min(n, len(self))])


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] → float32 [-1, 1] (the range every model in latentdiff takes)."""
    return images.float() / 127.5 - 1.0


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] → uint8 [0, 255], rounded and clamped."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def split_holdout(data: ImageData, holdout: int, seed: int) -> tuple[ImageData, ImageData]:
    """(train, held-out) by a seeded permutation (or the dataset's own split, of which at most
    `holdout` images are kept); the held-out part is never trained on."""
    if data.heldout_start is not None:
        n = len(data) - data.heldout_start
        keep = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:holdout].sort().values
        return data.subset(torch.arange(data.heldout_start)), data.subset(data.heldout_start + keep)
    if holdout >= len(data):
        raise UserError(f"data.holdout={holdout} leaves no training images out of "
                        f"{len(data)}; lower it")
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    return data.subset(perm[holdout:].sort().values), data.subset(perm[:holdout].sort().values)
