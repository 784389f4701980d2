"""Real data that ships offline, for the first stage and the conditional models:

- photos: crops of six colour photographs in scikit-image's wheel and scikit-learn's two sample images. Each photo
  is split by rows: crops of its top 3/4 (stride size/2, at full and half scale) train, crops of its bottom 1/4
  (same stride) are the held-out split, so no held-out pixel is ever trained on. Label = the source photo.
- emoji: the Noto Color Emoji glyphs (Debian's fonts-noto-color-emoji) of every fully-qualified emoji that the
  `emoji` package names, composited on white; label = the Unicode block of the first code point; `captions` holds
  the names ("woman detective: medium-dark skin tone"). Rendered once per size and cached.
"""

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from latentdiff.cache import cache_dir
from latentdiff.data.datasets import ImageData
from latentdiff.errors import UserError

log = logging.getLogger(__name__)
# files inside the scikit-image wheel (skimage/data)
SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "ihc.png")
HELDOUT_FRACTION = 0.25
EMOJI_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
EMOJI_RENDER_SIZE = 109  # the only bitmap strike of Noto Color Emoji (CBDT)
EMOJI_BLOCKS = (  # (name, first, last code point): the label of an emoji is the block of its first code point
    ("emoticons", 0x1F600, 0x1F64F), ("pictographs", 0x1F300, 0x1F5FF), ("transport", 0x1F680, 0x1F6FF),
    ("supplemental", 0x1F900, 0x1F9FF), ("extended-a", 0x1FA70, 0x1FAFF), ("flags", 0x1F1E6, 0x1F1FF),
    ("symbols-dingbats", 0x2600, 0x27BF))


def photo_sources() -> list[tuple[str, np.ndarray]]:
    """(name, H×W×3 uint8) of every bundled colour photograph."""
    try:
        import skimage
    except ImportError:
        raise UserError("data.dataset=photos needs scikit-image: pip install scikit-image") from None
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
        raise UserError(f"data.image_size={image_size} is too large for the bundled photos; use ≤ 128")
    images = torch.from_numpy(np.stack(train + heldout)).permute(0, 3, 1, 2).contiguous()
    return ImageData(images, torch.tensor(train_labels + heldout_labels), tuple(names), heldout_start=len(train))


def emoji_block(sequence: str) -> int:
    point = ord(sequence[0])
    return next((i for i, (_, lo, hi) in enumerate(EMOJI_BLOCKS) if lo <= point <= hi), len(EMOJI_BLOCKS))


def emoji_catalogue() -> list[tuple[str, str]]:
    """(emoji, name) of every fully-qualified emoji up to Emoji 15.0 (what the Debian 12 font covers)."""
    try:
        import emoji
    except ImportError:
        raise UserError("data.dataset=emoji needs the emoji package: pip install emoji") from None
    return [(e, info["en"].strip(":").replace("_", " ")) for e, info in emoji.EMOJI_DATA.items()
            if info["status"] == emoji.STATUS["fully_qualified"] and info["E"] <= 15]


def _render(sequence: str, font: ImageFont.FreeTypeFont) -> Image.Image | None:
    """One emoji as RGBA, cropped to its ink; None when the font lacks it (nothing drawn, or several glyphs)."""
    canvas = Image.new("RGBA", (4 * EMOJI_RENDER_SIZE, 2 * EMOJI_RENDER_SIZE), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((8, 8), sequence, font=font, embedded_color=True)
    box = canvas.getbbox()
    if box is None or box[2] - box[0] > 1.5 * EMOJI_RENDER_SIZE:
        return None
    return canvas.crop(box)


def _on_white(glyph: Image.Image, size: int) -> np.ndarray:
    side = max(glyph.size)
    square = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    square.alpha_composite(glyph, ((side - glyph.width) // 2, (side - glyph.height) // 2))
    return np.asarray(square.convert("RGB").resize((size, size), Image.Resampling.LANCZOS))


def _cache_path(font: Path, size: int, catalogue: list) -> Path:
    key = hashlib.sha256(f"{font.stat().st_size}:{size}:{len(catalogue)}:v1".encode()).hexdigest()[:16]
    return cache_dir() / "data" / f"emoji-{size}-{key}.npz"


def load_emoji(image_size: int = 64, font_path: Path | None = None) -> tuple[ImageData, list[str]]:
    """(images with block labels, names) of every emoji the font draws, rendered on white at image_size."""
    font_path = Path(font_path or EMOJI_FONT)
    if not font_path.is_file():
        raise UserError(f"emoji font {font_path} not found; install Debian's fonts-noto-color-emoji (apt-get install "
                        f"fonts-noto-color-emoji) or set data.path to NotoColorEmoji.ttf")
    catalogue = emoji_catalogue()
    cache = _cache_path(font_path, image_size, catalogue)
    if cache.is_file():
        stored = np.load(cache)
        images, names = stored["images"], [str(n) for n in stored["names"]]
    else:
        font = ImageFont.truetype(str(font_path), EMOJI_RENDER_SIZE)
        images, names = [], []
        for sequence, name in catalogue:
            glyph = _render(sequence, font)
            if glyph is not None:
                images.append(_on_white(glyph, image_size))
                names.append(f"{sequence}\t{name}")
        images = np.stack(images)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, images=images, names=np.array(names))
        tmp.replace(cache)
        log.info("rendered %d emoji at %dpx (cached at %s)", len(images), image_size, cache)
    labels = torch.tensor([emoji_block(n.split("\t")[0]) for n in names])
    block_names = tuple(name for name, _, _ in EMOJI_BLOCKS) + ("other",)
    data = ImageData(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), labels, block_names)
    return data, [n.split("\t")[1] for n in names]
