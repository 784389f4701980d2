"""The conditions y of a training batch (paper Sec. 3.3), with condition dropout.

Dropout (probability conditioning.drop_prob, drawn from the step's generator) replaces y by the null
condition, which each conditioning kind defines (`conditioning/`): the empty prompt or layout, zeros
for concatenated inputs, the extra class num_classes − 1 (class labels of the UNet's label
embedding, here).
"""

import dataclasses

import torch

from latentdiff.autoencoder import LatentCodec
from latentdiff.conditioning import Cond
from latentdiff.conditioning.conditioner import Conditioner
from latentdiff.data import ImageData, rank_slice


def batch_condition(conditioner: Conditioner | None, data: ImageData, index: torch.Tensor,
                    generator: torch.Generator, codec: LatentCodec, latent_size: tuple[int, int],
                    num_classes: int | None, drop_prob: float, cached=None,
                    rank: int = 0, world_size: int = 1) -> Cond:
    """Cond for the training images `index` (B,), this process's share (rank of world_size) of the
    global batch, on the CPU. `num_classes`: the UNet's (the last is the null class when
    drop_prob > 0), or None. `cached`: `conditioner.dataset_conditions(data)`, made once per run
    (made here when not given). The dropout is drawn for the global batch, so every process drops
    the rows one process would; the random degradations and masks of spatial conditioning are
    drawn per process."""
    drop = rank_slice(torch.rand(len(index) * world_size, generator=generator), rank,
                      world_size) < drop_prob
    labels = None
    if num_classes is not None:
        labels = data.labels[index]
        if drop_prob > 0:
            labels = torch.where(drop, num_classes - 1, labels)
    if conditioner is None:
        return Cond(class_labels=labels)
    extra = {}
    if conditioner.retrieves:  # a second draw for the global batch, as `drop`
        extra["hide"] = rank_slice(torch.rand(len(index) * world_size, generator=generator), rank,
                                   world_size) < conditioner.config.retrieval.drop_prob
    cond = conditioner.batch_condition(data, index, generator, codec, latent_size, drop, cached,
                                       **extra)
    return dataclasses.replace(cond, class_labels=labels)


def preview_conditions(system, data: ImageData, index: torch.Tensor) -> dict:
    """`generate` keyword arguments that condition on the training images `index`: prompts, layouts,
    class labels (class tokens) or spatial inputs."""
    latent_size = (system.image_size // system.codec.downsampling_factor,) * 2
    return system.conditioner.preview_inputs(data, index, system.codec, latent_size)
