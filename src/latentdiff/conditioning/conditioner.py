"""The conditioner: turns y (ground truth while training, user input while sampling) into a `Cond` (paper Sec. 3.3).

It owns what the kind needs: the tokenizer and the transformer τ_θ for text and layouts (trained jointly with the
UNet) or a frozen pretrained text encoder (`conditioning/pretrained.py`), the class embedding of class tokens, the
number of semantic classes, the super-resolution degradation. The null condition for classifier-free guidance is
the empty prompt / empty layout (tokens [BOS][EOS]), or the extra class num_classes − 1.
"""

import dataclasses

import torch
from torch import nn

from latentdiff.conditioning import Cond
from latentdiff.conditioning.classes import ClassTokenizer
from latentdiff.conditioning.layout import FIRST_POSITION, LayoutTokenizer
from latentdiff.conditioning.pretrained import PretrainedText
from latentdiff.conditioning.spatial import (degrade_realistic, downsample_bicubic, inpainting_concat, lowres_concat,
                                             semantic_concat)
from latentdiff.conditioning.text import CaptionTokenizer, TextTransformer, Tokens
from latentdiff.config import ConditioningConfig, TextEncoderConfig
from latentdiff.errors import UserError

TOKEN_KINDS = ("text", "layout", "class")


class Conditioner(nn.Module):
    """y → Cond for `cfg.kind`. `tokenizer` is a CaptionTokenizer (text), a LayoutTokenizer (layout), a
    ClassTokenizer (class) or a frozen PretrainedText (text, which tokenizes and encodes); `encoder` (τ_θ, trained)
    exists for the first two, `embedding` (num_classes, text.width) for class tokens."""

    def __init__(self, cfg: ConditioningConfig,
                 tokenizer: CaptionTokenizer | LayoutTokenizer | ClassTokenizer | PretrainedText | None = None,
                 semantic_classes: int = 0, image_channels: int = 3):
        super().__init__()
        self.config, self.tokenizer = cfg, tokenizer
        self.semantic_classes, self.image_channels = semantic_classes, image_channels
        if cfg.kind in TOKEN_KINDS and tokenizer is None:
            raise ValueError(f"conditioning kind {cfg.kind} needs a tokenizer")
        if cfg.kind == "semantic" and cfg.semantic_embedding:
            self.channel_mapper = nn.Conv2d(semantic_classes, cfg.semantic_embedding, 1, bias=False)
        if cfg.kind == "class":
            self.embedding = nn.Embedding(tokenizer.num_classes, cfg.text.width)  # the original ClassEmbedder's
        elif cfg.kind in TOKEN_KINDS and not isinstance(tokenizer, PretrainedText):
            text_cfg = dataclasses.replace(cfg.text, max_length=tokenizer.max_length)
            grid = (FIRST_POSITION, tokenizer.bins) if cfg.kind == "layout" else None
            self.encoder = TextTransformer(text_cfg, tokenizer.vocab_size, grid)

    @classmethod
    def frozen_text(cls, encoder: PretrainedText, masked_image: bool = False,
                    pretrained: str | None = None) -> "Conditioner":
        """A text conditioner around a frozen encoder, its config read off the encoder (context length, width,
        padding mask); `pretrained`: the folder name recorded in the config."""
        text = TextEncoderConfig(max_length=encoder.max_length, width=encoder.width,
                                 attend_to_padding=encoder.attend_to_padding, pretrained=pretrained)
        return cls(ConditioningConfig(kind="text", text=text, masked_image=masked_image), encoder)

    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def frozen(self) -> bool:
        """True when the text encoder is a frozen pretrained one (nothing of the conditioner is trained)."""
        return isinstance(self.tokenizer, PretrainedText)

    @property
    def context_dim(self) -> int | None:
        if self.frozen:
            return self.tokenizer.width
        return self.config.text.width if self.kind in TOKEN_KINDS else None

    def to(self, *args, **kwargs) -> "Conditioner":
        if self.frozen:
            self.tokenizer.to(*args, **kwargs)
        return super().to(*args, **kwargs)

    @property
    def inpaints(self) -> bool:
        """True when the model sees a mask and the masked image's latent (kind inpaint, or text with masked_image)."""
        return self.kind == "inpaint" or self.config.masked_image

    def concat_channels(self, latent_channels: int) -> int:
        """k, the channels concatenated to z_t (the UNet's in_channels = latent_channels + k)."""
        if self.inpaints:
            return latent_channels + 1
        semantic = self.config.semantic_embedding or self.semantic_classes
        return {"semantic": semantic, "superres": self.image_channels}.get(self.kind, 0)

    def tokens(self, y: list) -> Tokens:
        """Prompts (text), lists of boxes (layout) or labels (class) → Tokens; "", [] and the last class are the null
        condition."""
        return self.tokenizer(y)

    def encode(self, tokens: Tokens) -> Cond:
        """τ_θ(tokens) → Cond(context (B, M, width), context_mask (B, M))."""
        if self.frozen:
            context = self.tokenizer.encode(tokens)
        else:
            context = self.embedding(tokens.ids) if self.kind == "class" else self.encoder(tokens)
        return Cond(context=context, context_mask=tokens.mask)

    def null_input(self):
        """The null condition of one image: the empty prompt, the empty layout or the last (null) class."""
        if self.kind == "class":
            return self.tokenizer.num_classes - 1
        return "" if self.kind == "text" else []

    def null_tokens(self, n: int) -> Tokens:
        return self.tokens([self.null_input() for _ in range(n)])

    def degrade(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The super-resolution input: images (B, C, H, W) in [-1, 1] → (B, C, H/f, W/f)."""
        if self.config.sr_degradation == "realistic":
            return degrade_realistic(images, self.config.sr_factor, generator)
        return downsample_bicubic(images, self.config.sr_factor)

    def spatial(self, latent_size: tuple[int, int], *, semantic: torch.Tensor | None = None,
                lowres: torch.Tensor | None = None, masked_latent: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> Cond:
        """Cond(concat=…) for the concatenation kinds from the input that kind takes."""
        if self.kind == "semantic":
            concat = semantic_concat(semantic, self.semantic_classes, latent_size)
            if self.config.semantic_embedding:
                with torch.no_grad():
                    concat = self.channel_mapper(concat.to(self.channel_mapper.weight))
            return Cond(concat=concat)
        if self.kind == "superres":
            return Cond(concat=lowres_concat(lowres, latent_size))
        if self.inpaints:
            return Cond(concat=inpainting_concat(masked_latent, mask, mask_first=self.config.masked_image,
                                                 nearest=self.config.mask_downsampling == "nearest"))
        raise UserError(f"this model is conditioned on {self.kind}, not on a spatial input")


class ConditionedUNet(nn.Module):
    """The UNet with τ_θ in front: forward(x, t, tokens=…, **cond) encodes the tokens to a context, then runs the
    UNet. One module, so that the optimiser, DDP and the EMA see the UNet and τ_θ together."""

    def __init__(self, unet: nn.Module, conditioner: Conditioner):
        super().__init__()
        self.unet, self.conditioner = unet, conditioner

    @property
    def config(self):
        return self.unet.config

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, tokens: Tokens | None = None, **cond) -> torch.Tensor:
        if tokens is not None:
            encoded = self.conditioner.encode(tokens)
            cond.update(context=encoded.context, context_mask=encoded.context_mask)
        return self.unet(x, timesteps, **cond)
