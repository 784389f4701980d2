"""Layout conditioning (the paper's Sec. 3.3 and 4.3.1): bounding boxes as (l, b, c) tokens for τ_θ;
the kind is `LayoutConditioner`.

A box (x0, y0, x1, y1, class) in [0, 1] (y down) becomes three tokens: its top-left corner l and
bottom-right corner b, each discretised on a `bins` × `bins` grid, and its class c. A layout is
[BOS] (l b c)… [EOS] [PAD]…, the same `Tokens` as text, so the same transformer encoder τ_θ embeds
it; the empty layout is the unconditional input.
"""

import dataclasses
import json
import math
from pathlib import Path

import torch

from latentdiff.conditioning.text import TextTransformer
from latentdiff.conditioning.tokens import TokenConditioner, Tokens
from latentdiff.config import ConditioningConfig
from latentdiff.data import ImageData
from latentdiff.errors import UserError

PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
FIRST_POSITION = 3


class LayoutTokenizer:
    """Lists of boxes → Tokens (B, 3·max_boxes + 2). vocab: 3 specials, bins² positions, num_classes
    classes."""

    def __init__(self, num_classes: int, bins: int = 16, max_boxes: int = 8):
        self.num_classes, self.bins, self.max_boxes = num_classes, bins, max_boxes

    @property
    def vocab_size(self) -> int:
        return FIRST_POSITION + self.bins ** 2 + self.num_classes

    @property
    def max_length(self) -> int:
        return 3 * self.max_boxes + 2

    def position_token(self, x: float, y: float) -> int:
        col, row = (min(int(v * self.bins), self.bins - 1) for v in (x, y))
        return FIRST_POSITION + row * self.bins + col

    def check(self, boxes: list[tuple]) -> None:
        """One-line errors for boxes outside [0, 1], empty boxes, unknown classes and too many
        boxes."""
        if len(boxes) > self.max_boxes:
            raise UserError(f"{len(boxes)} boxes given; this model takes at most {self.max_boxes}")
        for box in boxes:
            if len(box) != 5:
                raise UserError(f"box {list(box)} must be [x0, y0, x1, y1, class]")
            x0, y0, x1, y1, c = box
            if not all(0.0 <= v <= 1.0 for v in (x0, y0, x1, y1)):
                raise UserError(f"box {list(box)} has coordinates outside [0, 1]; give fractions "
                                "of the image side")
            if not (x0 < x1 and y0 < y1):
                raise UserError(f"box {list(box)} is empty; need x0 < x1 and y0 < y1 (y "
                                "grows downwards)")
            if int(c) != c or not 0 <= int(c) < self.num_classes:
                raise UserError(f"box {list(box)} has class {c}; use an integer in 0 … "
                                f"{self.num_classes - 1}")

    def __call__(self, layouts: list[list[tuple]]) -> Tokens:
        ids = torch.full((len(layouts), self.max_length), PAD_ID, dtype=torch.long)
        for row, boxes in enumerate(layouts):
            self.check(boxes)
            tokens = [BOS_ID]
            for x0, y0, x1, y1, c in boxes:
                # the bottom-right corner token names the last cell the box covers
                tokens += [self.position_token(x0, y0), self.position_token(x1 - 1e-6, y1 - 1e-6),
                           FIRST_POSITION + self.bins ** 2 + int(c)]
            tokens.append(EOS_ID)
            ids[row, : len(tokens)] = torch.tensor(tokens)
        return Tokens(ids, ids != PAD_ID)


class LayoutConditioner(TokenConditioner):
    """Box lists → context through τ_θ (`encoder`, a TextTransformer whose corner tokens also get
    row and column embeddings). The null condition is the empty layout."""

    kind = "layout"
    needs = ("boxes", "boxes")
    input_name, input_flag = "layouts", "--boxes"

    def __init__(self, cfg: ConditioningConfig, tokenizer: LayoutTokenizer,
                 semantic_classes: int = 0,
                 image_channels: int = 3):
        super().__init__(cfg, tokenizer, semantic_classes, image_channels)
        text_cfg = dataclasses.replace(cfg.text, max_length=tokenizer.max_length)
        self.encoder = TextTransformer(text_cfg, tokenizer.vocab_size,
                                       (FIRST_POSITION, tokenizer.bins))

    @classmethod
    def from_data(cls, cfg: ConditioningConfig, data: ImageData) -> "LayoutConditioner":
        return cls(cfg, LayoutTokenizer(len(data.class_names), cfg.layout_bins, cfg.max_boxes))

    @classmethod
    def from_metadata(cls, cfg: ConditioningConfig, metadata: dict,
                      folder: Path) -> "LayoutConditioner":
        return cls(cfg,
                   LayoutTokenizer(int(metadata["layout_classes"]), cfg.layout_bins, cfg.max_boxes))

    def metadata(self) -> dict:
        return {"layout_classes": self.tokenizer.num_classes}

    def null_input(self) -> list:
        return []

    def training_inputs(self, data: ImageData, index: torch.Tensor) -> list[list[tuple]]:
        """The boxes of each image, at most max_boxes."""
        return [[tuple(b) for b in data.boxes[i][: self.config.max_boxes]] for i in index.tolist()]


def parse_boxes(text: str, what: str = "--boxes") -> list:
    """JSON boxes [[x0, y0, x1, y1, class], ...] (as typed on the command line or in the web UI) →
    a list of lists of finite numbers; a one-line error naming `what` otherwise (ranges and classes
    are checked by the layout tokenizer)."""
    try:
        boxes = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{what} is not JSON ({e.msg}); give e.g. '[[0.1, 0.1, "
                        "0.5, 0.5, 3]]'") from None
    if not isinstance(boxes, list) or not all(isinstance(b, list) for b in boxes):
        raise UserError(f"{what} must be a JSON list of [x0, y0, x1, y1, class] lists")
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for b in boxes for v in b):
        raise UserError(f"{what}: every value must be a finite number")
    return boxes
