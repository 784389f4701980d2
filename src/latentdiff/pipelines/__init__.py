"""Task-level functions composing codec, conditioning, denoiser and sampler; they validate input."""

from latentdiff.pipelines.generate import generate
from latentdiff.pipelines.grid import class_grid_labels

__all__ = ["class_grid_labels", "generate"]
