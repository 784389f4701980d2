"""Does a sample have the right colours? Mean ink colour per vertical band, against real glyphs.

A glyph on a white background (the bundled emoji) is reduced to the mean RGB of its ink — the pixels
that are not near-white — in each of `bands` equal vertical bands (left to right): one band says
"red" or "orange" for a heart, three tell a blue-white-red flag from a green-white-red one. A sample
is then compared with the real glyph it was asked for (the mean distance of the band colours, in
8-bit RGB units) and with every sibling glyph it could be confused with: it "matches" when it is
nearer to the asked-for glyph than to every sibling of visibly different colours (more than
`DISTINCT` away from the asked-for glyph; "heart exclamation" is as red as "red heart", and "flag
Clipperton Island" is drawn as the French flag).
"""

import torch

WHITE = 0.9  # a pixel is ink where some channel, in [0, 1], is below this
DISTINCT = 24.0  # glyphs whose band colours are further apart than this (8-bit units) look different


def band_colours(images: torch.Tensor, bands: int = 3, white: float = WHITE) -> torch.Tensor:
    """images (B, 3, H, W) in [-1, 1] → (B, bands, 3) mean RGB in [0, 1] of the ink pixels of each
    vertical band (columns split as evenly as possible); a band without ink is white (1, 1, 1)."""
    rgb = ((images.float() + 1) / 2).clamp(0, 1)
    ink = (rgb.amin(dim=1, keepdim=True) < white).float()  # (B, 1, H, W)
    colours = []
    for columns in torch.arange(images.shape[-1]).tensor_split(bands):
        area = ink[..., columns].sum(dim=(1, 2, 3))  # (B,)
        total = (rgb[..., columns] * ink[..., columns]).sum(dim=(2, 3))  # (B, 3)
        mean = total / area.clamp(min=1)[:, None]
        colours.append(torch.where(area[:, None] > 0, mean, torch.ones_like(mean)))
    return torch.stack(colours, dim=1)


def colour_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Band colours a (..., bands, 3) and b (broadcastable) in [0, 1] → (...) the mean over bands of
    the Euclidean RGB distance, in 8-bit units (0 … 255·√3)."""
    return 255 * (a - b).norm(dim=-1).mean(dim=-1)


def matches(samples: torch.Tensor, target: torch.Tensor, siblings: torch.Tensor,
            distinct: float = DISTINCT) -> torch.Tensor:
    """samples (B, bands, 3), the asked-for glyph's target (bands, 3) and its siblings (G, bands, 3)
    band colours → (B,) bool: the sample is nearer to the target than to every sibling more than
    `distinct` from the target (siblings that look the same are not confusions)."""
    different = siblings[colour_distance(siblings, target) > distinct]
    to_target = colour_distance(samples, target)
    if not len(different):
        return torch.ones_like(to_target, dtype=torch.bool)
    return to_target < colour_distance(samples[:, None], different[None]).amin(dim=1)
