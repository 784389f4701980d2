"""Captions of an image folder, in the formats text-to-image datasets already come in.

- `metadata.jsonl` (Hugging Face's imagefolder convention): one JSON object per line with
  `file_name` (relative to the metadata file's folder) and a caption field;
- `metadata.csv`: the same as a table with a header row;
- a sidecar text file per image (`0001.png` + `0001.txt`, as many fine-tuning sets are shipped).

Metadata files may sit in any sub-folder (each names files relative to itself); a metadata caption
wins over a sidecar one. The caption field is `data.caption_field` (default "text").
"""

import csv
import json
from pathlib import Path

from latentdiff.errors import UserError

METADATA = ("metadata.jsonl", "metadata.csv")


def _rows(path: Path) -> list[dict]:
    """The rows of one metadata file; a one-line error naming the file and line otherwise."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {path}: {e}") from None
    if path.suffix == ".csv":
        return list(csv.DictReader(text.splitlines()))
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path} line {number} is not JSON ({e.msg}); write one object per "
                            "line") from None
        if not isinstance(row, dict):
            raise UserError(f"{path} line {number} is not a JSON object")
        rows.append(row)
    return rows


def read_captions(root: Path, files: list[Path], field: str = "text") -> dict[Path, str] | None:
    """{image path: caption} for the images under `root` that have one (metadata files, then
    sidecar .txt files), or None when the folder has no captions at all."""
    captions: dict[Path, str] = {}
    found = False
    for sidecar in (p.with_suffix(".txt") for p in files):
        if sidecar.is_file():
            found = True
            captions[sidecar.with_suffix("")] = sidecar.read_text(encoding="utf-8",
                                                                  errors="replace").strip()
    by_stem = {p.with_suffix(""): p for p in files}
    captions = {by_stem[stem]: text for stem, text in captions.items()}
    for metadata in sorted(p for name in METADATA for p in root.rglob(name)):
        rows = _rows(metadata)
        found = True
        if rows and "file_name" not in rows[0]:
            raise UserError(f"{metadata} has no file_name column (its columns: "
                            f"{', '.join(rows[0])}); name each image in file_name")
        if rows and field not in rows[0]:
            raise UserError(f"data.caption_field={field} is not a column of {metadata} (its "
                            f"columns: {', '.join(rows[0])}); set data.caption_field")
        for row in rows:
            caption = row.get(field)
            if isinstance(caption, list):  # several captions per image: the first
                caption = caption[0] if caption else None
            if caption is not None:
                captions[metadata.parent / str(row["file_name"])] = str(caption).strip()
    return captions if found else None
