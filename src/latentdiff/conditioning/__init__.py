"""Conditioning y: everything besides z_t and t that a denoiser is given (SPEC §3).

All conditioning enters through one door, `Cond`: class labels (added to the time embedding) now; text/layout
context tokens for cross-attention and spatially aligned concat inputs join here (issue 4).
"""

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Cond:
    """class_labels: (B,) int64 or None; context: (B, M, d) or None."""

    class_labels: torch.Tensor | None = None
    context: torch.Tensor | None = None

    def network_kwargs(self) -> dict:
        return {"class_labels": self.class_labels, "context": self.context}
