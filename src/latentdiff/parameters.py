"""What made an image, carried in the PNG's text chunks: prompt, negative prompt, sampler, steps,
guidance, seed, model name and hash, and the task's own inputs (strength, class, boxes, size).

Written by `latentdiff sample` (and the other image commands) and by `latentdiff serve`, read back by
the web UI's "reuse these parameters". Each field is one iTXt chunk of its own name (readable with any
PNG tool, e.g. `exiftool` or PIL's `Image.open(path).text`), and the whole set is repeated as JSON in
the chunk `latentdiff` (what is read back).
"""

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from PIL import Image, PngImagePlugin

from latentdiff.errors import UserError

CHUNK = "latentdiff"


@dataclass(frozen=True)
class Parameters:
    """The inputs of one generated image (or, for a grid, of its first cell: `seeds` and `prompts`
    then list every cell's)."""

    task: str = "txt2img"  # txt2img, img2img, inpaint, upscale, layout, semantic
    model: str = ""
    model_hash: str = ""
    prompt: str | None = None
    negative_prompt: str | None = None
    class_label: int | None = None
    sampler: str = "ddim"
    steps: int = 50
    spacing: str = "uniform"
    guidance: float = 1.0
    guidance_rescale: float = 0.0
    seed: int = 0
    width: int | None = None
    height: int | None = None
    strength: float | None = None  # img2img
    boxes: list | None = None  # layout
    guidance_interval: list[float] | None = None
    sampler_options: dict | None = None  # e.g. {"eta": 1.0, "final": "t0"}
    # classifier guidance, autoguidance, prior: their models (name, hash) and settings
    guides: dict | None = None
    seeds: list[int] | None = None  # a grid's cells
    prompts: list[str] | None = None

    def text_chunks(self) -> dict[str, str]:
        """{chunk name: text}: every set field, and the JSON of all of them under `latentdiff`."""
        values = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        chunks = {k: v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}
        return {**chunks, CHUNK: json.dumps(values)}

    @classmethod
    def from_text_chunks(cls, chunks: dict[str, str]) -> "Parameters":
        """The parameters written by `text_chunks`; UserError when there are none or they do not
        parse."""
        if CHUNK not in chunks:
            raise UserError("this PNG carries no latentdiff parameters; drop an image that "
                            "latentdiff generated")
        try:
            values = json.loads(chunks[CHUNK])
            known = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in values.items() if k in known})
        except (json.JSONDecodeError, TypeError) as e:
            raise UserError(f"the PNG's latentdiff parameters do not parse ({e}); the file may "
                            "have been edited") from None


def png_info(parameters: Parameters) -> PngImagePlugin.PngInfo:
    """PIL's PngInfo holding the parameters as iTXt chunks (UTF-8: prompts in any script)."""
    info = PngImagePlugin.PngInfo()
    for key, text in parameters.text_chunks().items():
        info.add_itxt(key, text)
    return info


def read_parameters(path: str | Path) -> Parameters:
    """The parameters of a PNG written by latentdiff, read from its header chunks without decoding
    the pixels (so a huge image costs nothing); a one-line UserError otherwise."""
    try:
        with Image.open(path) as image:
            if image.format != "PNG":
                raise UserError(f"{Path(path).name} is {image.format}, not a PNG; drop a PNG that "
                                "latentdiff generated")
            chunks = {k: v for k, v in image.info.items() if isinstance(v, str)}
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise UserError(f"cannot read {Path(path).name}: {str(e).splitlines()[0]}") from None
    return Parameters.from_text_chunks(chunks)


def file_sha256(path: str | Path) -> str:
    """The SHA-256 (hex) of a file's bytes, read in blocks; computed once per file version (path,
    size and modification time)."""
    path = Path(path).resolve()
    stat = path.stat()
    return _file_digest(path, stat.st_size, stat.st_mtime_ns)


@cache
def _file_digest(path: Path, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def model_hash(path: str | Path) -> str:
    """The first 12 hex digits of the SHA-256 of a checkpoint file (of every file in a diffusers
    folder, in name order); computed once per file version."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    if len(files) == 1:
        return file_sha256(files[0])[:12]
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.relative_to(path)}:{file_sha256(file)}".encode())
    return digest.hexdigest()[:12]
