"""Class labels as one cross-attention token (the paper's class-conditional ImageNet LDM, `cin256-v2`: the
original `ClassEmbedder`), the alternative to adding a label embedding to the time embedding (`unet.num_classes`).

A label c becomes Tokens of length 1; the conditioner's `embedding` (num_classes, width) — the original's
`cond_stage_model.embedding` — turns it into the context (B, 1, width). The last class is the null class of
classifier-free guidance when the model was trained with condition dropout (cin256-v2: 1000 classes + null 1000).
"""

import torch

from latentdiff.conditioning.text import Tokens
from latentdiff.errors import UserError


class ClassTokenizer:
    """Class labels → Tokens (B, 1), every token real."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes

    @property
    def max_length(self) -> int:
        return 1

    def __call__(self, labels: list[int]) -> Tokens:
        ids = torch.as_tensor([int(c) for c in labels], dtype=torch.long).reshape(-1, 1)
        if len(ids) and (ids.min() < 0 or ids.max() >= self.num_classes):
            raise UserError(f"class labels {ids.flatten().tolist()[:10]} must be in 0 … {self.num_classes - 1}")
        return Tokens(ids, torch.ones_like(ids, dtype=torch.bool))
