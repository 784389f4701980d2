"""Task-level functions composing codec, conditioning, denoiser and sampler; they validate input."""

from latentdiff.pipelines.generate import class_grid_labels, generate

__all__ = ["class_grid_labels", "generate"]
