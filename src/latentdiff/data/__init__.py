"""Data: in-memory image datasets (digits, MNIST, image folders) and the deterministic batch
schedule."""

from latentdiff.data.batches import batch_indices, rank_slice
from latentdiff.data.datasets import load_dataset, load_digits, load_image_folder, load_mnist
from latentdiff.data.image_data import ImageData, split_holdout, to_model_range, to_uint8

__all__ = ["ImageData", "batch_indices", "load_dataset", "load_digits",
           "load_image_folder", "load_mnist",
           "rank_slice", "split_holdout", "to_model_range", "to_uint8"]
