"""Checkpoint files: safetensors with JSON metadata, written atomically; no pickle anywhere.

A latentdiff checkpoint is self-describing: its metadata holds `latentdiff.kind` ("autoencoder" or
"latent_diffusion"), the configs needed to rebuild every model, and the training state; tensors are grouped by
prefix (`autoencoder.`, `unet.`, `unet_ema.`, `optimizer.`).
"""

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from latentdiff.errors import UserError

KIND = "latentdiff.kind"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> Path:
    """Write tensors + JSON-encoded metadata to `path` atomically: a temporary file in the same folder, fsync, then
    rename, so a crash leaves either the old file or the new one, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(tmp),
                  metadata={k: json.dumps(v) for k, v in metadata.items()})
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # the writer creates 0600 files; give the usual permissions
        os.replace(tmp, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _open(path: Path):
    if not path.is_file():
        raise UserError(f"checkpoint {str(path)!r} does not exist; check the path")
    try:
        return safe_open(str(path), framework="pt")
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{path} is not a readable safetensors checkpoint ({e}); it may be truncated or of another "
                        f"format") from None


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The decoded metadata of a checkpoint, without reading its tensors."""
    with _open(Path(path)) as f:
        raw = f.metadata() or {}
    try:
        return {k: json.loads(v) for k, v in raw.items()}
    except json.JSONDecodeError:
        return dict(raw)


def read_tensors(path: str | Path, prefix: str = "") -> dict[str, torch.Tensor]:
    """Tensors whose key starts with `prefix`, with the prefix removed (only those are read from disk)."""
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


def load_weights(module: nn.Module, tensors: dict[str, torch.Tensor], source: str, assign: bool = False) -> None:
    """load_state_dict that names missing, unexpected and mis-shaped keys in a UserError (`assign`: the tensors
    become the parameters, e.g. for a module built on the meta device)."""
    expected = module.state_dict()
    missing = sorted(expected.keys() - tensors.keys())
    unexpected = sorted(tensors.keys() - expected.keys())
    misshaped = sorted(f"{k} {tuple(tensors[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                       if k in tensors and tensors[k].shape != v.shape)
    problems = [f"{label} {', '.join(keys[:5])}{' …' if len(keys) > 5 else ''}"
                for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped))
                if keys]
    if problems:
        raise UserError(f"{source} does not fit the model: {'; '.join(problems)}")
    module.load_state_dict(tensors, assign=assign)


def prefixed(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}{k}": v for k, v in state.items()}


def flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """optimizer.state_dict() → (tensors "{param}.{name}", JSON-able rest: param_groups and non-tensor state)."""
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
