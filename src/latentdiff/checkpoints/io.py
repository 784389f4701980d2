"""Checkpoint files: safetensors with JSON metadata and a content checksum, written atomically; no
pickle anywhere.

A latentdiff checkpoint is self-describing: its metadata holds `latentdiff.kind` ("autoencoder" or
"latent_diffusion"), the configs needed to rebuild every model, and the training state; tensors are
grouped by prefix (`autoencoder.`, `unet.`, `unet_ema.`, `optimizer.`).

Files are written by our own streaming writer of the safetensors format (8-byte little-endian header
length, the JSON header, the tensors' bytes), so that the only temporary file is ours
(`files.atomic_write`) and the checksum can cover the whole file: `latentdiff.sha256` is the SHA-256
of the header without that entry (canonical JSON) followed by every tensor's bytes. Reading a file
that carries it verifies it once per process (about 1 s per GB on one core,
benchmarks/bench_checksum.py); `trusted_files()` (the CLI's --no-verify) skips that for files you
trust.
"""

import contextlib
import contextvars
import hashlib
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from latentdiff.errors import UserError
from latentdiff.files import atomic_write, same_file

KIND = "latentdiff.kind"
CHECKSUM = "latentdiff.sha256"
DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
          torch.int64: "I64", torch.int32: "I32", torch.int16: "I16",
          torch.int8: "I8", torch.uint8: "U8",
          torch.uint16: "U16", torch.uint32: "U32", torch.uint64: "U64", torch.bool: "BOOL",
          torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2"}
CHUNK = 16 * 2 ** 20
_verify = contextvars.ContextVar("verify_checksums", default=True)
_verified: set[tuple] = set()


@contextlib.contextmanager
def trusted_files() -> Iterator[None]:
    """Within the block, checkpoint checksums are not verified (the files are trusted)."""
    token = _verify.set(False)
    try:
        yield
    finally:
        _verify.reset(token)


def _tensor_bytes(tensor: torch.Tensor) -> memoryview:
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy()) if flat.numel() else memoryview(b"")


def _canonical(header: dict) -> bytes:
    """The header as hashed: its metadata without the checksum entry, keys sorted, no spaces."""
    header = dict(header)
    header["__metadata__"] = {k: v for k,
                              v in header.get("__metadata__", {}).items() if k != CHECKSUM}
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode()


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor],
                    metadata: dict[str, Any]) -> Path:
    """Write tensors + JSON-encoded metadata (+ the checksum) to `path` atomically: a crash leaves
    either the old file or the new one, never a torn one."""
    return write_safetensors(path, tensors, {k: json.dumps(v) for k, v in metadata.items()})


def write_safetensors(path: str | Path, tensors: dict[str, torch.Tensor],
                      metadata: dict[str, str]) -> Path:
    """A safetensors file with string `metadata` (+ the checksum), written atomically
    (`save_checkpoint`)."""
    header: dict[str, Any] = {"__metadata__": dict(metadata)}
    views, offset = [], 0
    for name in sorted(tensors):
        tensor = tensors[name]
        if tensor.dtype not in DTYPES:
            raise UserError(f"tensor {name} has dtype {tensor.dtype}, which a "
                            "checkpoint cannot hold")
        view = _tensor_bytes(tensor)
        header[name] = {"dtype": DTYPES[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + view.nbytes]}
        views.append(view)
        offset += view.nbytes
    digest = hashlib.sha256(_canonical(header))
    for view in views:
        digest.update(view)
    header["__metadata__"][CHECKSUM] = digest.hexdigest()
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the format pads the header to a multiple of 8 bytes
    with atomic_write(path) as f:
        f.write(struct.pack("<Q", len(encoded)) + encoded)
        for view in views:
            f.write(view)
    return Path(path)


def _header(path: Path, size: int) -> dict | None:
    """The JSON header of a safetensors file (None when it is not one), read without the tensors."""
    try:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length)) if length <= size else None
    except (OSError, struct.error, ValueError):
        return None
    return header if isinstance(header, dict) else None


def check_replaceable(dst: str | Path, src: str | Path | None = None) -> None:
    """A one-line error when writing `dst` would destroy what cannot be rebuilt: the input `src`
    itself (the same file under any path), or a training checkpoint (its optimiser state and
    step)."""
    dst = Path(dst)
    if src is not None and same_file(src, dst):
        raise UserError(f"{dst} is the input file itself; give another output file (it would be "
                        "overwritten)")
    if dst.is_file():
        raw = (_header(dst, dst.stat().st_size) or {}).get("__metadata__", {})
        if isinstance(raw, dict) and "train_state" in raw:
            raise UserError(f"{dst} is a training checkpoint (its run could not be resumed if it "
                            f"were replaced); give another output file")


def _verify_checksum(path: Path) -> None:
    """Raise when the file's `latentdiff.sha256` does not match its content
    (files without one pass)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if key in _verified:
        return
    header = _header(path, stat.st_size)
    metadata = header.get("__metadata__") if header else None
    stored = metadata.get(CHECKSUM) if isinstance(metadata, dict) else None
    # not ours, or written before checksums: safetensors' own checks apply
    if not isinstance(stored, str):
        return
    with open(path, "rb") as f:
        start = 8 + struct.unpack("<Q", f.read(8))[0]
        try:
            ends = (int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__")
            end = start + max(ends, default=0)
        except (KeyError, IndexError, TypeError, ValueError):
            end = -1
        if end != stat.st_size:
            raise UserError(f"{path} is truncated or damaged: it holds {stat.st_size} bytes, not "
                            f"the {end} its header describes; restore it or use an "
                            "earlier checkpoint")
        digest = hashlib.sha256(_canonical(header))
        f.seek(start)
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    if digest.hexdigest() != stored:
        raise UserError(f"{path} is corrupted: its content does not match its checksum (damaged on "
                        "disk or in a copy); restore it or use an earlier checkpoint (--no-verify "
                        "skips the check)")
    _verified.add(key)


def _open(path: Path):
    if path.is_dir():
        raise UserError(f"checkpoint {str(path)!r} is a folder, not a checkpoint file; give the "
                        ".safetensors file")
    if not path.is_file():
        raise UserError(f"checkpoint {str(path)!r} does not exist; check the path")
    try:
        if _verify.get():
            _verify_checksum(path)
        return safe_open(str(path), framework="pt")
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{path} is not a readable safetensors checkpoint ({e}); it may be "
                        f"truncated or of another format") from None


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The decoded metadata of a checkpoint (JSON values decoded; others, e.g. of files from other
    tools, as they are), without reading its tensors; the checksum entry is left out."""
    with _open(Path(path)) as f:
        raw = f.metadata() or {}
    return {k: _decoded(v) for k, v in raw.items() if k != CHECKSUM}


def _decoded(value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def read_tensors(path: str | Path, prefix: str = "") -> dict[str, torch.Tensor]:
    """Tensors whose key starts with `prefix`, with the prefix removed (only those are read from
    disk)."""
    with _open(Path(path)) as f:
        try:
            return {k[len(prefix):]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}
        except SafetensorError as e:
            raise UserError(f"{path} is damaged ({e}); use an earlier checkpoint") from None


def require_kind(path: str | Path, kind: str, hint: str) -> dict[str, Any]:
    """The metadata of `path`, after checking that it is a latentdiff checkpoint of `kind`."""
    metadata = read_metadata(path)
    found = metadata.get(KIND)
    if found != kind:
        what = f"a {found} checkpoint" if found else "not a latentdiff checkpoint"
        raise UserError(f"{path} is {what}, but a {kind} checkpoint is needed; {hint}")
    return metadata


def load_weights(module: nn.Module, tensors: dict[str, torch.Tensor], source: str,
                 assign: bool = False) -> None:
    """load_state_dict that names missing, unexpected and mis-shaped keys in a UserError (`assign`:
    the tensors become the parameters, e.g. for a module built on the meta device)."""
    expected = module.state_dict()
    missing = sorted(expected.keys() - tensors.keys())
    unexpected = sorted(tensors.keys() - expected.keys())
    misshaped = sorted(f"{k} {tuple(tensors[k].shape)} vs {tuple(v.shape)}" for k,
                       v in expected.items()
                       if k in tensors and tensors[k].shape != v.shape)
    problems = [f"{label} {', '.join(keys[:5])}{' …' if len(keys) > 5 else ''}"
                for label,
                keys in (("missing", missing), ("unexpected", unexpected),
                         ("mis-shaped", misshaped))
                if keys]
    if problems:
        raise UserError(f"{source} does not fit the model: {'; '.join(problems)}")
    module.load_state_dict(tensors, assign=assign)


def prefixed(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}{k}": v for k, v in state.items()}


def flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """optimizer.state_dict() → (tensors "{param}.{name}", JSON-able rest: param_groups and
    non-tensor state)."""
    tensors, scalars = {}, {}
    for param, entries in state["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{param}.{name}"] = value
            else:
                scalars[f"{param}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], rest: dict) -> dict:
    """Inverse of `flatten_optimizer`."""
    state: dict[int, dict] = {}
    for key, value in [*tensors.items(), *rest["scalars"].items()]:
        param, name = key.split(".", 1)
        state.setdefault(int(param), {})[name] = value
    return {"state": state, "param_groups": rest["param_groups"]}
