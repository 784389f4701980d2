"""Image files: sample grids as PNG; user images, masks and semantic maps read with validation."""

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from latentdiff.errors import UserError
from latentdiff.files import atomic_write
from latentdiff.parameters import Parameters, png_info


def image_grid(images: torch.Tensor, ncols: int, padding: int = 2) -> np.ndarray:
    """uint8 (N, C, H, W), C ∈ {1, 3} → uint8 array (rows·(H+p)+p, ncols·(W+p)+p[, 3]) on a white
    background."""
    n, c, h, w = images.shape
    nrows = -(-n // ncols)
    grid = np.full((c, nrows * (h + padding) + padding, ncols * (w + padding) + padding), 255,
                   dtype=np.uint8)
    for i, image in enumerate(images.cpu().numpy()):
        top, left = padding + (i // ncols) * (h + padding), padding + (i % ncols) * (w + padding)
        grid[:, top:top + h, left:left + w] = image
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)


def draw_boxes(images: torch.Tensor, boxes) -> torch.Tensor:
    """uint8 images (N, 3, H, W) with the outline of every box [x0, y0, x1, y1, …] (in [0, 1], y
    down) drawn over each, 1 px, in black (a layout model's condition shown over its samples)."""
    out = images.clone()
    h, w = images.shape[-2:]
    for box in boxes:
        left, top = min(int(box[0] * w), w - 1), min(int(box[1] * h), h - 1)
        right, bottom = min(max(int(box[2] * w) - 1, left), w - 1), min(max(int(box[3] * h) - 1, top), h - 1)
        out[:, :, top:bottom + 1, [left, right]] = 0
        out[:, :, [top, bottom], left:right + 1] = 0
    return out


IMAGE_OUTPUTS = (".png", ".jpg", ".jpeg", ".webp")  # what a grid can be written as (PNG: lossless)


def save_image_grid(images: torch.Tensor, path: str | Path, ncols: int,
                    parameters: Parameters | None = None) -> Path:
    """Write uint8 images (N, C, H, W) as one grid with `ncols` columns, atomically (PNG, or
    JPEG/WebP by the file's extension); a PNG carries `parameters` in its text chunks. A single
    image is written as itself, without the grid's border."""
    path = Path(path)
    image_format = Image.registered_extensions().get(path.suffix.lower())
    if path.suffix.lower() not in IMAGE_OUTPUTS or image_format is None:
        raise UserError(f"{path}: write images as {' or '.join(IMAGE_OUTPUTS)}")
    options = {}
    if parameters is not None and image_format == "PNG":
        options["pnginfo"] = png_info(parameters)
    with atomic_write(path) as f:
        pixels = image_grid(images, ncols, padding=0 if len(images) == 1 else 2)
        Image.fromarray(pixels).save(f, format=image_format, **options)
    return path


# default limit on an input image's width × height (--max-pixels raises it)
MAX_PIXELS = 4096 * 4096


def _open(path: str | Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open and decode an image file, after checking its declared size against `max_pixels` (a
    30000×30000 header would otherwise be decoded into gigabytes, and a model would run on it)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"image {path} is a folder; give an image file")
    if not path.is_file():
        raise UserError(f"image {path} does not exist")
    pil_limit = Image.MAX_IMAGE_PIXELS
    try:
        # our limit, checked below before any pixel is decoded, replaces PIL's
        Image.MAX_IMAGE_PIXELS = None
        image = Image.open(path)
        if image.width * image.height > max_pixels:
            raise UserError(f"image {path} is {image.width}×{image.height} "
                            f"({image.width * image.height / 1e6:.1f} megapixels), above the limit "
                            f"of {max_pixels / 1e6:.1f} megapixels; make it smaller or raise --max-pixels")
        image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise UserError(f"cannot read image {path}: "
                        f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = pil_limit
    return image


def check_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> None:
    """A one-line UserError when the file is not a readable image within `max_pixels` (what
    `load_image` would refuse), without converting it."""
    _open(path, max_pixels).close()


def _eight_bit(image: Image.Image) -> Image.Image:
    """16-bit (and 32-bit integer) images → 8-bit "L" scaled from the 16-bit range
    (documented conversion)."""
    if image.mode not in ("I;16", "I;16B", "I;16L", "I"):
        return image
    pixels = np.asarray(image).astype(np.float64)
    if image.mode != "I" or pixels.max() > 255:  # "I" with values ≤ 255 is already 8-bit data
        pixels = pixels / 257.0
    return Image.fromarray(pixels.round().clip(0, 255).astype(np.uint8))


def load_image(path: str | Path, channels: int = 3, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """An image file → uint8 (channels, H, W). Conversions: an alpha channel is composited on white;
    16-bit images are scaled to 8 bits; palette/greyscale/RGB are converted to `channels`
    (1: luma, 3: RGB)."""
    image = _eight_bit(_open(path, max_pixels))
    if "A" in image.getbands() or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    pixels = np.asarray(image.convert("L" if channels == 1 else "RGB"))
    pixels = pixels[:, :, None] if channels == 1 else pixels
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1).contiguous()


def load_mask(path: str | Path, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """A black/white mask file → (H, W) float of 0 (keep) and 1 (generate); grey values are an
    error."""
    pixels = np.asarray(_eight_bit(_open(path, max_pixels)).convert("L"))
    values = set(np.unique(pixels).tolist())
    if not values <= {0, 255} and not values <= {0, 1}:
        raise UserError(f"mask {path} is not binary (values {sorted(values)[:6]}…); use black "
                        f"(keep) and white (generate) only")
    return torch.from_numpy((pixels > 0).astype(np.float32))


def load_label_map(path: str | Path, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """A semantic map file (greyscale or palette PNG whose pixel values are class ids) → (H, W)
    int64."""
    image = _open(path, max_pixels)
    if image.mode not in ("L", "P", "I", "I;16"):
        raise UserError(f"semantic map {path} is {image.mode}; save class ids as a greyscale "
                        "or palette PNG")
    return torch.from_numpy(np.asarray(image).astype(np.int64))
