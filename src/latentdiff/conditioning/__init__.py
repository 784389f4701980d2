"""Conditioning y: everything besides z_t and t that a denoiser is given (paper Sec. 3.3).

All conditioning enters through one door, `Cond`: class labels (added to the time embedding),
context tokens for cross-attention (already encoded, or as `tokens` that the network's τ_θ encodes),
spatially aligned concat inputs.
"""

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Cond:
    """class_labels: (B,) int64; context: (B, M, d) cross-attention tokens τ_θ(y) with context_mask
    (B, M) bool (True = a real token); tokens: `Tokens` (B, M) not yet encoded (a `ConditionedUNet`
    encodes them); concat: (B, k, h, w) spatially aligned inputs at the latent size. Any may be
    None."""

    class_labels: torch.Tensor | None = None
    context: torch.Tensor | None = None
    context_mask: torch.Tensor | None = None
    concat: torch.Tensor | None = None
    tokens: Any = None
    guidance: torch.Tensor | None = None

    def network_kwargs(self) -> dict:
        kwargs = {"class_labels": self.class_labels, "context": self.context}
        for name in ("concat", "context_mask", "tokens", "guidance"):
            if getattr(self, name) is not None:
                kwargs[name] = getattr(self, name)
        return kwargs

    def to(self, device: torch.device | str) -> "Cond":
        return Cond(**{f.name: None if getattr(self, f.name) is None
                       else getattr(self, f.name).to(device)
                       for f in dataclasses.fields(self)})

    def rows(self, rows: slice) -> "Cond":
        """The rows `rows` of the batch (e.g. one micro-batch of gradient accumulation)."""
        def pick(value):
            if value is None or isinstance(value, torch.Tensor):
                return None if value is None else value[rows]
            return type(value)(*(getattr(value, f.name)[rows] for f in dataclasses.fields(value)))
        return Cond(**{f.name: pick(getattr(self, f.name)) for f in dataclasses.fields(self)})

    def cat(self, other: "Cond") -> "Cond":
        """[self; other] along the batch (e.g. cond and uncond in one forward pass); both must set
        the same fields."""
        def join(a, b):
            if (a is None) != (b is None):
                raise ValueError("cannot batch a Cond with a field set against one without it")
            if a is None:
                return None
            if isinstance(a, torch.Tensor):
                return torch.cat([a, b])
            return type(a)(*(torch.cat([getattr(a, f.name), getattr(b, f.name)])
                             for f in dataclasses.fields(a)))
        return Cond(**{f.name: join(getattr(self, f.name), getattr(other, f.name))
                       for f in dataclasses.fields(self)})
