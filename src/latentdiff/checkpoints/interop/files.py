"""Reading weights of other toolkits safely: safetensors, or pickled `.ckpt`/`.bin` without
executing anything.

A pickle may name any Python callable and have it called while loading; that is how a malicious
checkpoint runs code. Pickles are therefore read only by `torch.load(weights_only=True)`, whose
unpickler builds tensors and plain containers and refuses every other global. Lightning `.ckpt`
files (every CompVis release) also pickle bookkeeping objects beside the weights, e.g.
`pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint`; those globals, and only those
(`INERT_MODULES`), are mapped to `Inert`, our own class that stores nothing and calls nothing, so
the file loads without the Lightning code and without running any of it. Any other global is refused
by name.
"""

import pickle
import re
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from latentdiff.errors import UserError

# Packages whose pickled objects sit beside the weights in published checkpoints (training
# bookkeeping).
# (argparse: the Namespace of the original DiT training checkpoints)
INERT_MODULES = ("pytorch_lightning.", "lightning.", "lightning_fabric.", "omegaconf.", "numpy.",
                 "argparse.")


class Inert:
    """Stands in for a bookkeeping object of a pickled checkpoint: accepts any construction and
    state, keeps none."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


def _unsafe_globals(path: Path) -> list[str]:
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except (RuntimeError, ValueError, zipfile.BadZipFile, pickle.UnpicklingError, EOFError):
        return []  # legacy (non-zip) format or unreadable: torch.load below reports it


def _refusal_reason(message: str) -> str:
    """What torch's weights-only unpickler refused, from its error text (which varies with the file
    format)."""
    found = re.search(r"GLOBAL ([\w.]+)", message)
    if found:
        return f"calls {found.group(1)}"
    for line in message.splitlines():
        line = line.strip().removeprefix("WeightsUnpickler error:").strip()
        if line.startswith(("Unsupported", "Unpickler", "Trying to")):
            return f"holds what weights-only loading refuses ({line[:160]})"
    return "holds objects other than tensors"


def load_pickle(path: Path) -> object:
    """torch.load(weights_only=True) with Lightning/OmegaConf/numpy globals mapped to `Inert`;
    nothing executes."""
    with open(path, "rb") as f:
        head = f.read(2)
    # neither torch's zip format nor a pickle (protocol ≥ 2)
    if not zipfile.is_zipfile(path) and head[:1] != b"\x80":
        raise UserError(f"{path} is neither a safetensors file nor a PyTorch checkpoint "
                        f"(.ckpt/.pt/.bin); check the path")
    names = _unsafe_globals(path)
    refused = [n for n in names if not n.startswith(INERT_MODULES)]
    if refused:
        raise UserError(f"{path} is a pickle that calls {', '.join(refused[:3])}: refusing to load "
                        f"it (it could run code); ask for a .safetensors file")
    try:
        with torch.serialization.safe_globals([(Inert, name) for name in names]):
            return torch.load(path, map_location="cpu", weights_only=True,
                              mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as e:
        raise UserError(f"{path} is a pickle that {_refusal_reason(str(e))}: refusing to load it "
                        f"(it could run code); ask for a .safetensors file") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise UserError(f"{path} cannot be read as a PyTorch checkpoint "
                        f"({str(e).split('. ')[0][:160]}); it may be truncated") from None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The flat {name: tensor} of a `.safetensors`, `.ckpt`, `.pt`, `.pth` or `.bin` file (a
    Lightning checkpoint's `state_dict` entry; non-tensor entries dropped)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"checkpoint {str(path)!r} is a folder, not a checkpoint file (a diffusers "
                        f"pipeline folder holds model_index.json)")
    if not path.is_file():
        raise UserError(f"checkpoint {str(path)!r} does not exist; check the path")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise UserError(f"{path} is not a readable safetensors file ({e}); it may "
                            "be truncated") from None
    loaded = load_pickle(path)
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise UserError(f"{path} holds a {type(loaded).__name__}, not a state dict of weights")
    return {k: v for k, v in loaded.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
