"""Token conditioning (paper Sec. 3.3): y → `Tokens` → τ_θ(y), the context (B, M, d) of the UNet's
cross-attention.

Text, layouts and class tokens share it: their null condition is one more input (the empty prompt,
the empty layout, the null class), and a training batch indexes the tokens of the whole dataset,
tokenised once per run, with the null condition as one extra row.
"""

from dataclasses import dataclass
from typing import ClassVar

import torch

from latentdiff.conditioning import Cond
from latentdiff.conditioning.conditioner import Conditioner
from latentdiff.config import ConditioningConfig
from latentdiff.data import ImageData


@dataclass(frozen=True)
class Tokens:
    """ids (B, L) int64, padded with [PAD]; mask (B, L) bool, True on real tokens
    ([BOS] … [EOS])."""

    ids: torch.Tensor
    mask: torch.Tensor

    def to(self, device: torch.device | str) -> "Tokens":
        return Tokens(self.ids.to(device), self.mask.to(device))

    def __getitem__(self, index) -> "Tokens":
        return Tokens(self.ids[index], self.mask[index])


class TokenConditioner(Conditioner):
    """y → Tokens (`tokenizer`) → context (`encode`). A kind sets `input_name`
    (its `generate` keyword) and `input_flag` (its command-line option) and defines `null_input` and
    `training_inputs`."""

    input_name: ClassVar[str]
    input_flag: ClassVar[str]

    def __init__(self, cfg: ConditioningConfig, tokenizer, semantic_classes: int = 0,
                 image_channels: int = 3):
        super().__init__(cfg, semantic_classes, image_channels)
        self.tokenizer = tokenizer

    @property
    def context_dim(self) -> int:
        return self.config.text.width

    def tokens(self, y: list) -> Tokens:
        """A batch of y (prompts, box lists or labels) → Tokens; `null_input()` is the null
        condition."""
        return self.tokenizer(y)

    def encode(self, tokens: Tokens) -> Cond:
        """τ_θ(tokens) → Cond(context (B, M, width), context_mask (B, M))."""
        return Cond(context=self.encoder(tokens), context_mask=tokens.mask)

    def null_input(self):
        """The null condition of one image."""
        raise NotImplementedError

    def null_inputs(self, inputs: list) -> list:
        """The null conditions of a batch of y for guidance: `null_input()` for each by default
        (a retrieval model keeps each prompt's references)."""
        return [self.null_input() for _ in inputs]

    def null_tokens(self, n: int) -> Tokens:
        return self.tokens([self.null_input() for _ in range(n)])

    def training_inputs(self, data: ImageData, index: torch.Tensor) -> list:
        """The y of the images `index` of `data` (its ground truth)."""
        raise NotImplementedError

    def dataset_conditions(self, data: ImageData) -> Tokens | Cond:
        """The tokens of every image of `data` followed by the null condition (row len(data)); with
        a frozen encoder their contexts (encoded once: the encoder never changes) as a
        Cond(context, context_mask)."""
        tokens = self.tokens([*self.training_inputs(data, torch.arange(len(data))),
                              self.null_input()])
        return self.encode(tokens) if self.frozen else tokens

    def batch_condition(self, data: ImageData, index: torch.Tensor,
                        generator: torch.Generator, codec,
                        latent_size: tuple[int, int], drop: torch.Tensor,
                        cached: Tokens | Cond | None = None) -> Cond:
        """A `tokens` Cond (τ_θ runs inside the trained network) or, with a frozen encoder, a
        `context` Cond."""
        cached = self.dataset_conditions(data) if cached is None else cached
        rows = torch.where(drop, len(data), index)  # the last cached row is the null condition
        if isinstance(cached, Cond):
            return Cond(context=cached.context[rows], context_mask=cached.context_mask[rows])
        return Cond(tokens=cached[rows])

    def preview_inputs(self, data: ImageData, index: torch.Tensor, codec,
                       latent_size: tuple[int, int]) -> dict:
        return {self.input_name: self.training_inputs(data, index)}

    def condition(self, inputs: list, device: torch.device | str) -> Cond:
        """The encoded Cond of a batch of y on `device` (at sampling)."""
        return self.encode(self.tokens(inputs).to(device))

