"""A deterministic batch schedule: the global batch of step k is a pure function of (seed, k).

Training can therefore resume at any step without sampler state, and N processes that each take
their slice of the global batch see exactly the samples one process would.
"""

import functools

import torch


@functools.lru_cache(maxsize=1)  # consecutive steps share an epoch: one permutation per epoch
def _epoch_permutation(num_items: int, seed: int, epoch: int) -> torch.Tensor:
    """(num_items,) int64, read only (it is cached): 8 bytes per item."""
    return torch.randperm(num_items,
                          generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def batch_indices(num_items: int, batch_size: int, step: int, seed: int) -> torch.Tensor:
    """Indices (batch_size,) of step `step`: consecutive slices of per-epoch random permutations."""
    chunks, position, end = [], step * batch_size, (step + 1) * batch_size
    while position < end:
        epoch, offset = divmod(position, num_items)
        take = min(end - position, num_items - offset)
        chunks.append(_epoch_permutation(num_items, seed, epoch)[offset:offset + take])
        position += take
    return torch.cat(chunks)


def rank_slice(batch: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """This process's contiguous share of a global batch along dim 0 (the batch size divides
    evenly)."""
    share = batch.shape[0] // world_size
    return batch[rank * share:(rank + 1) * share]
