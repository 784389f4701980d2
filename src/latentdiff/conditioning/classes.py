"""Class labels as one cross-attention token, `ClassTokenConditioner` (the paper's class-conditional
ImageNet LDM, `cin256-v2`: the original `ClassEmbedder`), the alternative to adding a label
embedding to the time embedding (`unet.num_classes`).

A label c becomes Tokens of length 1; the conditioner's `embedding` (num_classes, width) — the
original's `cond_stage_model.embedding` — turns it into the context (B, 1, width). The last class is
the null class of classifier-free guidance when the model was trained with condition dropout
(cin256-v2: 1000 classes + null 1000).
"""

from pathlib import Path

import torch
from torch import nn

from latentdiff.conditioning import Cond
from latentdiff.conditioning.tokens import TokenConditioner, Tokens
from latentdiff.config import ConditioningConfig
from latentdiff.data import ImageData
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
            raise UserError(f"class labels {ids.flatten().tolist()[:10]} must be in 0 … "
                            f"{self.num_classes - 1}")
        return Tokens(ids, torch.ones_like(ids, dtype=torch.bool))


class ClassTokenConditioner(TokenConditioner):
    """Labels → context (B, 1, width) through `embedding` (num_classes, width), the original
    ClassEmbedder's. The null condition is the last class (present when trained with condition
    dropout)."""

    kind = "class"
    needs = ("num_classes", "class labels")
    input_name, input_flag = "class_labels", "--class"

    def __init__(self, cfg: ConditioningConfig, tokenizer: ClassTokenizer,
                 semantic_classes: int = 0,
                 image_channels: int = 3):
        super().__init__(cfg, tokenizer, semantic_classes, image_channels)
        self.embedding = nn.Embedding(tokenizer.num_classes, cfg.text.width)

    @classmethod
    def from_data(cls, cfg: ConditioningConfig, data: ImageData) -> "ClassTokenConditioner":
        """The data's classes + the null class of classifier-free guidance, last
        (when drop_prob > 0)."""
        return cls(cfg, ClassTokenizer(data.num_classes + (1 if cfg.drop_prob > 0 else 0)))

    @classmethod
    def from_metadata(cls, cfg: ConditioningConfig, metadata: dict,
                      folder: Path) -> "ClassTokenConditioner":
        return cls(cfg, ClassTokenizer(int(metadata["token_classes"])))

    def metadata(self) -> dict:
        return {"token_classes": self.tokenizer.num_classes}

    @property
    def num_classes(self) -> int:
        return self.tokenizer.num_classes

    def encode(self, tokens: Tokens) -> Cond:
        return Cond(context=self.embedding(tokens.ids), context_mask=tokens.mask)

    def null_input(self) -> int:
        return self.tokenizer.num_classes - 1

    def training_inputs(self, data: ImageData, index: torch.Tensor) -> list[int]:
        return data.labels[index].tolist()
