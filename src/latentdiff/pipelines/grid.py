"""The layout of a sample grid: which seed and which condition each cell gets, and how many columns
it has."""

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class GridRequest:
    """seeds (one per image), ncols, and the condition keyword arguments of `generate`."""

    seeds: list[int]
    ncols: int
    conditions: dict = field(default_factory=dict)


def class_grid_labels(num_classes: int, per_class: int) -> list[int]:
    """Labels for a grid with one row per class: [0]*per_class + [1]*per_class + ..."""
    return [c for c in range(num_classes) for _ in range(per_class)]


def sample_grid(num_classes: int | None, seed: int, n: int | None = None,
                prompts: Sequence[str] | None = None,
                negative_prompt: str | None = None, class_label: int | None = None) -> GridRequest:
    """`latentdiff sample`'s grid: one row of n (default 8) images per prompt, the same seeds in
    every row; for class-conditional models (`num_classes`, the null class included) one row per
    class (n images in all), or n (default 64) images of `class_label`; otherwise n (default 64)
    images in a square-ish grid. Seeds count up from `seed`."""
    if prompts:
        ncols = n or 8
        expanded = [p for p in prompts for _ in range(ncols)]
        negative = [negative_prompt] * len(expanded) if negative_prompt is not None else None
        seeds = [seed + i % ncols for i in range(len(expanded))]
        return GridRequest(seeds, ncols, {"prompts": expanded, "negative_prompts": negative})
    if class_label is not None:
        count = n or 64
        labels, ncols = [class_label] * count, min(count, 10)
    elif num_classes:
        per_class = -(-n // num_classes) if n else max(1, 64 // num_classes)
        labels, ncols = class_grid_labels(num_classes, per_class)[:n or num_classes * per_class], per_class
    else:
        count = n or 64
        return GridRequest([seed + i for i in range(count)], max(1, round(count ** 0.5)))
    return GridRequest([seed + i for i in range(len(labels))], ncols, {"class_labels": labels})
