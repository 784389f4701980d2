"""The models a server offers: found on the command line or in a folder, loaded on first use and
shared by every request (at most `capacity` at once, least recently used first out).

No web framework here: the catalog, the pool and `tasks` are plain Python, tested without a
browser.
"""

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from latentdiff.checkpoints.io import KIND, read_metadata
from latentdiff.errors import UserError
from latentdiff.ldm import LatentDiffusion

log = logging.getLogger(__name__)

# the tabs of the page, in order; `tasks` says which a model supports
TASKS = ("txt2img", "img2img", "inpaint", "upscale", "layout", "semantic")
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth")


@dataclass(frozen=True)
class ModelEntry:
    """A checkpoint the server can load: `name` is shown in the model switcher; `config` is an
    original (CompVis) checkpoint's YAML found beside it (same name, .yaml)."""

    name: str
    path: Path
    config: Path | None = None


def _entry(path: Path, name: str) -> ModelEntry:
    config = path.with_suffix(".yaml") if path.is_file() else None
    return ModelEntry(name, path, config if config is not None and config.is_file() else None)


def _is_model(path: Path) -> bool:
    """A checkpoint of a latent diffusion model (or student), a diffusers pipeline folder, or an
    original checkpoint; not an autoencoder of ours, not a training run's step-N file."""
    if path.is_dir():
        return (path / "model_index.json").is_file()
    if path.suffix not in CHECKPOINT_SUFFIXES or path.name.startswith("step-"):
        return False
    if path.suffix == ".safetensors":
        try:
            kind = read_metadata(path).get(KIND)
        except (UserError, OSError, ValueError):
            return False
        return kind in (None, "latent_diffusion")
    return True


def discover(checkpoints: Sequence[str | Path] = (), folder: str | Path | None = None,
             bundled: Sequence[Path] = ()) -> list[ModelEntry]:
    """The catalog: each of `checkpoints` (an error when one does not exist), then every model in
    `folder` and its subfolders (checkpoints, diffusers folders), named by their path in it; with
    neither, the `bundled` models. Names are unique."""
    entries: list[ModelEntry] = []
    for checkpoint in checkpoints:
        path = Path(checkpoint)
        if not path.exists():
            raise UserError(f"checkpoint {path} does not exist; give a model file or a diffusers "
                            "folder")
        entries.append(_entry(path, path.name if path.is_dir() else path.stem))
    if folder is not None:
        root = Path(folder)
        if not root.is_dir():
            raise UserError(f"--models {root} is not a folder; give a folder of checkpoints")
        inside = {p.parent for p in root.rglob("model_index.json")}  # diffusers folders
        for path in sorted(root.rglob("*")):
            if any(parent in inside for parent in path.parents) or not _is_model(path):
                continue
            relative = path.relative_to(root)
            name = str(relative if path.is_dir() else relative.with_suffix(""))
            entries.append(_entry(path, name))
        if not entries:
            raise UserError(f"--models {root}: no checkpoints found (.safetensors, .ckpt, "
                            "diffusers folders)")
    if not entries:
        entries = [_entry(Path(p), Path(p).stem) for p in bundled]
    seen: dict[str, int] = {}
    unique = []
    for entry in entries:
        seen[entry.name] = seen.get(entry.name, 0) + 1
        name = entry.name if seen[entry.name] == 1 else f"{entry.name} ({seen[entry.name]})"
        unique.append(ModelEntry(name, entry.path, entry.config))
    return unique


def tasks(model: LatentDiffusion) -> tuple[str, ...]:
    """The tabs a model supports: text, class-conditional and unconditional models generate, edit
    (img2img) and inpaint by masked blending; the other kinds do their own task only."""
    conditioner = model.conditioner
    if conditioner is None or conditioner.kind in ("text", "class"):
        if conditioner is not None and conditioner.inpaints:
            return ("inpaint",)  # Stable Diffusion's inpainting models
        return ("txt2img", "img2img", "inpaint")
    return {"inpaint": ("inpaint",), "superres": ("upscale",), "layout": ("layout",),
            "semantic": ("semantic",)}[conditioner.kind]


class ModelPool:
    """Loads each model once and shares it: `get(name)` returns the loaded model, loading it (and
    unloading the least recently used beyond `capacity`) when needed. Thread-safe; one load at a
    time."""

    def __init__(self, entries: Sequence[ModelEntry], device: str = "cpu", capacity: int = 1,
                 loader=None):
        if capacity < 1:
            raise UserError(f"--keep-models {capacity}: keep at least 1 model loaded")
        self.entries = {e.name: e for e in entries}
        self.device, self.capacity = device, capacity
        self._loaded: OrderedDict[str, LatentDiffusion] = OrderedDict()
        self._lock = threading.Lock()
        self._loader = loader or _load

    @property
    def names(self) -> list[str]:
        return list(self.entries)

    def entry(self, name: str) -> ModelEntry:
        if name not in self.entries:
            raise UserError(f"no model named {name!r}; choose one of {', '.join(self.entries)}")
        return self.entries[name]

    def loaded(self) -> list[str]:
        with self._lock:
            return list(self._loaded)

    def get(self, name: str) -> LatentDiffusion:
        entry = self.entry(name)
        with self._lock:
            if name in self._loaded:
                self._loaded.move_to_end(name)
                return self._loaded[name]
            while len(self._loaded) >= self.capacity:
                dropped, _ = self._loaded.popitem(last=False)
                log.info("unloaded %s", dropped)
            model = self._loader(entry, self.device)
            self._loaded[name] = model
            log.info("loaded %s from %s", name, entry.path)
            return model


def _load(entry: ModelEntry, device: str) -> LatentDiffusion:
    from latentdiff.checkpoints import load_model

    return load_model(entry.path, entry.config, device)
