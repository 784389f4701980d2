"""Image files: sample grids as PNG."""

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def image_grid(images: torch.Tensor, ncols: int, padding: int = 2) -> np.ndarray:
    """uint8 (N, C, H, W), C ∈ {1, 3} → uint8 array (rows·(H+p)+p, ncols·(W+p)+p[, 3]) on a white background."""
    n, c, h, w = images.shape
    nrows = -(-n // ncols)
    grid = np.full((c, nrows * (h + padding) + padding, ncols * (w + padding) + padding), 255, dtype=np.uint8)
    for i, image in enumerate(images.cpu().numpy()):
        top, left = padding + (i // ncols) * (h + padding), padding + (i % ncols) * (w + padding)
        grid[:, top:top + h, left:left + w] = image
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)


def save_image_grid(images: torch.Tensor, path: str | Path, ncols: int) -> Path:
    """Write uint8 images (N, C, H, W) as one PNG grid with `ncols` columns."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image_grid(images, ncols)).save(path)
    return path
