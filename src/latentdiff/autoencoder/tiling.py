"""Encoding and decoding of images larger than memory allows, in overlapping tiles with blended
seams.

Both networks are convolutional, so any size divisible by f works untiled (`autoencoder.encode(x)`);
tiling bounds the memory to one tile at a time. Each tile's output is weighted by a ramp that rises
linearly across the overlap (flat at the image border) and the weighted outputs are normalised by
the summed weights. Outputs differ from the untiled ones only near seams and through GroupNorm
statistics and attention, which see one tile at a time.
"""

from collections.abc import Callable

import torch

from latentdiff.errors import UserError


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size `tile` covering [0, length), neighbours overlapping
    by ≥ `overlap`."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    return [*range(0, length - tile, stride), length - tile]


def _ramp(size: int, overlap: int, at_start: bool, at_end: bool) -> torch.Tensor:
    """Blend weights (size,): rising 1/(overlap+1) … 1 over the first `overlap` entries unless the
    tile touches the image's start, mirrored at the end."""
    w = torch.ones(size)
    ramp = torch.arange(1, overlap + 1, dtype=torch.float32) / (overlap + 1)
    if overlap and not at_start:
        w[:overlap] = ramp
    if overlap and not at_end:
        w[-overlap:] = torch.minimum(w[-overlap:], ramp.flip(0))
    return w


def tiled_map(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int, overlap: int,
              scale: float) -> torch.Tensor:
    """Apply fn to overlapping tiles of x (B, C, H, W) and blend. fn maps a (B, C, t, t) tile to (B,
    C', t·scale, t·scale); the result is (B, C', H·scale, W·scale)."""
    if not 0 <= overlap < tile:
        raise UserError(f"tile overlap {overlap} must be ≥ 0 and smaller than the tile size {tile}")
    h, w = x.shape[-2:]
    out, weights = None, None
    rows, cols = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    for top in rows:
        for left in cols:
            y = fn(x[..., top:top + tile, left:left + tile])
            if out is None:
                out = y.new_zeros(*y.shape[:2], round(h * scale), round(w * scale))
                weights = y.new_zeros(1, 1, *out.shape[-2:])
            th, tw = y.shape[-2:]
            o_top, o_left, o_overlap = round(top * scale), round(left * scale), round(overlap * scale)
            weight = torch.outer(_ramp(th, o_overlap, top == 0, top == rows[-1]),
                                 _ramp(tw, o_overlap, left == 0, left == cols[-1])).to(y)
            out[..., o_top:o_top + th, o_left:o_left + tw] += y * weight
            weights[..., o_top:o_top + th, o_left:o_left + tw] += weight
    return out / weights


@torch.no_grad()
def tiled_encode(autoencoder, x: torch.Tensor, tile: int = 256, overlap: int = 64) -> torch.Tensor:
    """Posterior-mean latents (B, c, H/f, W/f) of x (B, C, H, W) in [-1, 1], encoded `tile` pixels
    at a time; tile and overlap must be multiples of f."""
    f = autoencoder.config.downsampling_factor
    _check_multiple(tile, overlap, f, "pixels")
    return tiled_map(lambda t: autoencoder.encode(t).mean, x, tile, overlap, 1.0 / f)


@torch.no_grad()
def tiled_decode(autoencoder, z: torch.Tensor, tile: int = 32, overlap: int = 8) -> torch.Tensor:
    """Images (B, C, h·f, w·f) of raw latents z (B, c, h, w), decoded `tile` latent positions at a
    time."""
    return tiled_map(autoencoder.decode, z, tile, overlap,
                     float(autoencoder.config.downsampling_factor))


def _check_multiple(tile: int, overlap: int, f: int, unit: str) -> None:
    if tile % f or overlap % f:
        raise UserError(f"tile {tile} and overlap {overlap} {unit} must be multiples of the "
                        f"autoencoder's f={f}")
