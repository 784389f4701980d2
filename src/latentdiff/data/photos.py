"""The bundled photographs: crops of six colour photographs in scikit-image's wheel and
scikit-learn's two sample images, offline. Each photo is split by rows: crops of its top 3/4 (stride
size/2, at full and half scale) train, crops of its bottom 1/4 (same stride) are the held-out split,
so no held-out pixel is ever trained on. Label = the source photo.
"""

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from latentdiff.data.image_data import ImageData
from latentdiff.errors import UserError

# files inside the scikit-image wheel (skimage/data)
SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg",
                  "motorcycle_left.png", "ihc.png")
HELDOUT_FRACTION = 0.25


def photo_sources() -> list[tuple[str, np.ndarray]]:
    """(name, H×W×3 uint8) of every bundled colour photograph."""
    try:
        import skimage
    except ImportError:
        raise UserError("data.dataset=photos needs scikit-image: pip install "
                        "scikit-image") from None
    from sklearn.datasets import load_sample_images

    folder = Path(skimage.__file__).parent / "data"
    photos = []
    for file in SKIMAGE_PHOTOS:
        with Image.open(folder / file) as image:
            photos.append((Path(file).stem, np.asarray(image.convert("RGB"))))
    sample = load_sample_images()
    photos += [(Path(f).stem, img) for f, img in zip(sample.filenames, sample.images)]
    return [(name, img[..., :3]) for name, img in photos]


def _crops(image: np.ndarray, size: int, stride: int) -> list[np.ndarray]:
    h, w = image.shape[:2]
    return [image[top:top + size, left:left + size] for top in range(0, h - size + 1, stride)
            for left in range(0, w - size + 1, stride)]


def _half(image: np.ndarray) -> np.ndarray:
    pil = Image.fromarray(image)
    return np.asarray(pil.resize((pil.width // 2, pil.height // 2), Image.Resampling.LANCZOS))


def load_photos(image_size: int = 64) -> ImageData:
    """Training crops first, then the held-out crops (`heldout_start` marks the boundary)."""
    train, heldout, train_labels, heldout_labels, names = [], [], [], [], []
    for label, (name, image) in enumerate(photo_sources()):
        names.append(name)
        boundary = int(image.shape[0] * (1 - HELDOUT_FRACTION))
        top, bottom = image[:boundary], image[boundary:]
        for region in (top, _half(top)):
            crops = _crops(region, image_size, max(1, image_size // 2))
            train += crops
            train_labels += [label] * len(crops)
        crops = _crops(bottom, image_size, max(1, image_size // 2))
        heldout += crops
        heldout_labels += [label] * len(crops)
    if not heldout:
        raise UserError(f"data.image_size={image_size} is too large for the bundled "
                        "photos; use ≤ 128")
    images = torch.from_numpy(np.stack(train + heldout)).permute(0, 3, 1, 2).contiguous()
    return ImageData(images, torch.tensor(train_labels + heldout_labels), tuple(names),
                     heldout_start=len(train))
