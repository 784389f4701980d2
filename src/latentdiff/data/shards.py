"""WebDataset tar shards as an index of byte ranges (`records.Records`), so that any sample can be
read at random: the global batch order is then a pure function of (seed, step), every rank reads its
own share of it, and a resumed run sees exactly the batches it would have seen.

`data.path`: a brace pattern (`data/{000000..000099}.tar`), a glob, a folder (all its `.tar` files)
or a shard's URL in any scheme the `webdataset` library opens (http(s)://, s3:// via `pipe:`, gs://,
hf://, pipe:…); several patterns may be joined with `::`. URL shards are copied once into the local
cache ($XDG_CACHE_HOME/latentdiff/shards), so they take local disk the size of the data.

A sample is the members that share a key (the path up to the first dot of the file name, the
WebDataset convention): `0001.jpg` + `0001.txt` (+ `0001.json`, `0001.cls`).
"""

import glob
import hashlib
import json
import logging
import re
import tarfile
from pathlib import Path

import numpy as np

from latentdiff.cache import cache_dir
from latentdiff.data.records import Records, Strings
from latentdiff.errors import UserError
from latentdiff.files import atomic_write

log = logging.getLogger(__name__)
TEXT_MEMBERS = ("txt", "json", "cls")
_URL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)


def shard_paths(pattern: str) -> list[str]:
    """The local paths of the shards `pattern` names (URLs copied into the cache first)."""
    from braceexpand import braceexpand

    paths: list[str] = []
    for part in pattern.split("::"):
        for name in braceexpand(part):
            if _URL.match(name) and not name.startswith("file:"):
                paths.append(str(_staged(name)))
            elif Path(name.removeprefix("file:")).is_dir():
                paths.extend(sorted(str(p) for p in Path(name.removeprefix("file:")).glob("*.tar")))
            else:
                found = sorted(glob.glob(name.removeprefix("file:")))
                if not found:
                    raise UserError(f"no shard matches {name!r}; fix data.path (a brace "
                                    "pattern like data/{000000..000009}.tar, a glob or a folder)")
                paths.extend(found)
    return paths


def _staged(url: str) -> Path:
    """The local copy of a remote shard, downloaded (atomically) on first use."""
    from webdataset.gopen import gopen

    local = cache_dir() / "shards" / (hashlib.sha256(url.encode()).hexdigest()[:24] + ".tar")
    if local.exists():
        return local
    local.parent.mkdir(parents=True, exist_ok=True)
    log.info("copying %s into %s", url, local)
    try:
        with gopen(url, "rb") as stream, atomic_write(local) as out:
            while chunk := stream.read(1 << 20):
                out.write(chunk)
    except Exception as e:  # whatever the URL scheme's handler raises
        raise UserError(f"cannot read the shard {url}: {str(e).splitlines()[0]}; check the URL "
                        "and its access") from None
    return local


def _split(name: str) -> tuple[str, str] | None:
    """(key, extension) of a member name: the extension is everything after the first dot of the
    file name."""
    folder, _, base = name.rpartition("/")
    if "." not in base:
        return None
    stem, ext = base.split(".", 1)
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def webdataset_records(pattern: str, image_field: str, caption_field: str) -> Records:
    """The index of every sample of the shards that has an image (members with one of the
    ";"-separated extensions `image_field`); samples without one are counted in a warning."""
    paths = shard_paths(pattern)
    image_exts = [e.strip().lower() for e in image_field.split(";") if e.strip()]
    file, offset, length, captions, labels = [], [], [], [], []
    no_image = has_caption = has_label = 0
    for number, path in enumerate(paths):
        try:
            samples = _samples(path)
        except (OSError, tarfile.TarError) as e:
            log.warning("skipped the unreadable shard %s: %s", path, e)
            continue
        for members in samples:
            image = next((members[e] for e in image_exts if e in members), None)
            if image is None:
                no_image += 1
                continue
            caption = _caption(members, caption_field)
            label = members.get("cls")
            has_caption += caption is not None
            has_label += label is not None
            file.append(number)
            offset.append(image[0])
            length.append(image[1])
            captions.append(caption)
            labels.append(label)
    if no_image:
        log.warning("skipped %d sample(s) without a %s member in %s", no_image, image_field, pattern)
    if not file:
        raise UserError(f"no sample with an image ({image_field}) in the shards of {pattern}; "
                        "check data.path and data.image_field")
    n = len(file)
    text = Strings(c or "" for c in captions) if has_caption == n else Strings()
    if 0 < has_caption < n:
        log.warning("%d of %d samples have no caption in %s; training without captions",
                    n - has_caption, n, pattern)
    label_array, class_names = None, ()
    if has_label == n:
        try:
            label_array = np.asarray([int(v.decode().strip()) for v in labels], dtype=np.int64)
        except (ValueError, UnicodeDecodeError, AttributeError):
            raise UserError(f"a .cls member in {pattern} is not a class number; write one "
                            "integer per .cls member") from None
        class_names = tuple(str(c) for c in range(int(label_array.max()) + 1))
    return Records(Strings(paths), np.asarray(file, dtype=np.int64),
                   np.asarray(offset, dtype=np.int64), np.asarray(length, dtype=np.int64),
                   text, label_array, class_names)


def _samples(path: str) -> list[dict]:
    """The samples of one shard, in shard order: {extension: (data offset, size)} per key, and the
    content itself for the small text members (txt, json, cls)."""
    samples: list[dict] = []
    last = None
    with tarfile.open(path, "r:") as tar:
        for member in tar:
            parts = _split(member.name) if member.isfile() else None
            if parts is None:
                continue
            key, ext = parts
            if key != last:
                samples.append({})
                last = key
            small = ext in TEXT_MEMBERS and member.size < 1 << 20
            samples[-1][ext] = tar.extractfile(member).read() if small else (member.offset_data,
                                                                                member.size)
    return samples


def _caption(members: dict, caption_field: str) -> str | None:
    if isinstance(members.get("txt"), bytes):
        return members["txt"].decode("utf-8", errors="replace").strip()
    if isinstance(members.get("json"), bytes):
        try:
            value = json.loads(members["json"]).get(caption_field)
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            return None
        return None if value is None else str(value).strip()
    return None
