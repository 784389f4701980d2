"""Text conditioning (paper Sec. 3.3): a caption tokenizer and the paper's transformer encoder τ_θ,
trained with the UNet, or a frozen pretrained text encoder (`pretrained.py`); `TextConditioner` is
the kind.

The tokenizer is a byte-pair encoding learned on the training captions with HF `tokenizers`; its
JSON travels inside the checkpoint, so a model needs no vocabulary file. Every prompt becomes [BOS]
tokens… [EOS] [PAD]…; the empty prompt "" ([BOS][EOS]) is the unconditional input of classifier-free
guidance. A BERT WordPiece vocabulary (the original text-to-image LDMs' `BERTEmbedder`) works the
same way with [CLS] and [SEP] in place of [BOS] and [EOS].
"""

import dataclasses
import warnings
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from torch import nn

from latentdiff.conditioning import Cond
from latentdiff.conditioning.pretrained import PretrainedText
from latentdiff.conditioning.spatial import masked_image_concat
from latentdiff.conditioning.tokens import TokenConditioner, Tokens
from latentdiff.config import ConditioningConfig, TextEncoderConfig
from latentdiff.data import ImageData
from latentdiff.nn.transformer import CrossAttention

PAD, UNK, BOS, EOS = "[PAD]", "[UNK]", "[BOS]", "[EOS]"
BERT_BOS, BERT_EOS = "[CLS]", "[SEP]"


class CaptionTokenizer:
    """Prompts → `Tokens` of a fixed length `max_length` (the context length M of the
    cross-attention).

    `attend_to_padding`: the mask marks every position (padding included) as attended, as in the
    original BERTEmbedder, which passes no mask to its transformer or to the UNet.
    """

    def __init__(self, tokenizer: Tokenizer, max_length: int, attend_to_padding: bool = False):
        if max_length < 3:
            raise ValueError("max_length must leave room for [BOS], a token and [EOS]")
        self.tokenizer, self.max_length, self.attend_to_padding = tokenizer, max_length, attend_to_padding
        bos, eos = (BOS, EOS) if tokenizer.token_to_id(BOS) is not None else (BERT_BOS, BERT_EOS)
        self.pad_id, self.bos_id, self.eos_id = (tokenizer.token_to_id(t) for t in (PAD, bos, eos))
        if None in (self.pad_id, self.bos_id, self.eos_id):
            raise ValueError(f"the vocabulary lacks {PAD} and {BOS}/{EOS} (or "
                             f"{BERT_BOS}/{BERT_EOS})")

    @classmethod
    def train(cls, captions: list[str], vocab_size: int, max_length: int) -> "CaptionTokenizer":
        """Learn a lower-cased BPE vocabulary of at most `vocab_size` entries (specials included) on
        `captions`."""
        tokenizer = Tokenizer(models.BPE(unk_token=UNK))
        tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(),
                                                           pre_tokenizers.Digits()])
        trainer = trainers.BpeTrainer(vocab_size=vocab_size,
                                      special_tokens=[PAD, UNK, BOS, EOS], show_progress=False)
        tokenizer.train_from_iterator(captions, trainer)
        return cls(tokenizer, max_length)

    @classmethod
    def from_json(cls, text: str, cfg: TextEncoderConfig) -> "CaptionTokenizer":
        """The tokenizer stored in a checkpoint, with the context length and padding mask of the
        text config."""
        return cls(Tokenizer.from_str(text), cfg.max_length, cfg.attend_to_padding)

    @classmethod
    def bert_wordpiece(cls, vocab_file: str | Path, max_length: int) -> "CaptionTokenizer":
        """BERT's uncased WordPiece tokenizer from its vocab.txt (bert-base-uncased's is the
        original BERTEmbedder's); every position attended, as there."""
        tokenizer = Tokenizer(models.WordPiece.from_file(str(vocab_file), unk_token=UNK))
        # also strips accents, as BERT uncased
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
        return cls(tokenizer, max_length, attend_to_padding=True)

    def to_json(self) -> str:
        return self.tokenizer.to_str()

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def __call__(self, prompts: list[str]) -> Tokens:
        """Longer prompts are cut to max_length − 2 tokens with a warning naming how many were
        dropped."""
        ids = torch.full((len(prompts), self.max_length), self.pad_id, dtype=torch.long)
        room = self.max_length - 2
        for row, encoding in enumerate(self.tokenizer.encode_batch(list(prompts), add_special_tokens=False)):
            pieces = encoding.ids
            if len(pieces) > room:
                warnings.warn(f"prompt {prompts[row][:40]!r} has {len(pieces)} tokens; the context "
                              f"holds {room}, the last {len(pieces) - room} are dropped",
                              stacklevel=2)
                pieces = pieces[:room]
            ids[row, : len(pieces) + 2] = torch.tensor([self.bos_id, *pieces, self.eos_id])
        return Tokens(ids,
                      torch.ones_like(ids, dtype=torch.bool) if self.attend_to_padding
                      else ids != self.pad_id)

    def decode(self, ids: torch.Tensor) -> str:
        """The text of one row of ids (L,), special tokens dropped."""
        return self.tokenizer.decode(ids.tolist(), skip_special_tokens=True)


class TextLayer(nn.Module):
    """x ← x + Attn(LN₁ x) (padding masked); x ← x + MLP(LN₂ x). x: (B, L, width)."""

    def __init__(self, width: int, num_heads: int, head_dim: int, mlp_ratio: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = CrossAttention(width, None, num_heads, head_dim)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_ratio * width), nn.GELU(),
                                 nn.Linear(mlp_ratio * width, width))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), context_mask=mask)
        return x + self.mlp(self.norm2(x))


class TextTransformer(nn.Module):
    """τ_θ(y): Tokens (B, L) → context (B, L, width); the paper's text encoder, trained jointly with
    the UNet.

    `grid` (first id, bins) marks ids first … first + bins² − 1 as cells of a bins × bins grid
    (layout corners): their embedding also gets a row and a column embedding, so that what is
    learned about one cell carries over to its row and column — with 32² cells and a few thousand
    layouts most cells are seen only a few times.
    """

    def __init__(self, cfg: TextEncoderConfig, vocab_size: int,
                 grid: tuple[int, int] | None = None):
        super().__init__()
        self.config, self.grid = cfg, grid
        self.token_embedding = nn.Embedding(vocab_size, cfg.width)
        self.position_embedding = nn.Embedding(cfg.max_length, cfg.width)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.position_embedding.weight, std=0.01)
        if grid is not None:
            self.grid_row_embedding = nn.Embedding(grid[1], cfg.width)
            self.grid_col_embedding = nn.Embedding(grid[1], cfg.width)
            nn.init.normal_(self.grid_row_embedding.weight, std=0.02)
            nn.init.normal_(self.grid_col_embedding.weight, std=0.02)
        head_dim = cfg.head_dim or cfg.width // cfg.num_heads
        self.layers = nn.ModuleList(TextLayer(cfg.width, cfg.num_heads, head_dim, cfg.mlp_ratio)
                                    for _ in range(cfg.depth))
        self.final_norm = nn.LayerNorm(cfg.width)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids (B, L) → (B, L, width), position embedding included."""
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.token_embedding(ids) + self.position_embedding(positions)
        if self.grid is not None:
            first, bins = self.grid
            cell = ids - first
            on_grid = ((cell >= 0) & (cell < bins * bins)).unsqueeze(-1)
            cell = cell.clamp(0, bins * bins - 1)
            x = x + on_grid * (self.grid_row_embedding(cell // bins) + self.grid_col_embedding(cell % bins))
        return x

    def forward(self, tokens: Tokens) -> torch.Tensor:
        x = self.embed(tokens.ids)
        for layer in self.layers:
            x = layer(x, tokens.mask)
        return self.final_norm(x)


class TextConditioner(TokenConditioner):
    """Prompts → context. `tokenizer`: a CaptionTokenizer, with τ_θ (`encoder`, a TextTransformer)
    trained with the UNet, or a frozen `PretrainedText`, which tokenises and encodes. The null
    condition is the empty prompt. With `masked_image` (Stable Diffusion inpainting) the model also
    sees a mask and the masked image's latent."""

    kind = "text"
    needs = ("captions", "captions")
    input_name, input_flag = "prompts", "--prompt"

    def __init__(self, cfg: ConditioningConfig, tokenizer: CaptionTokenizer | PretrainedText,
                 semantic_classes: int = 0,
                 image_channels: int = 3):
        super().__init__(cfg, tokenizer, semantic_classes, image_channels)
        if not self.frozen:
            self.encoder = TextTransformer(dataclasses.replace(cfg.text, max_length=tokenizer.max_length),
                                           tokenizer.vocab_size)

    @classmethod
    def frozen_text(cls, encoder: PretrainedText, masked_image: bool = False,
                    pretrained: str | None = None) -> "TextConditioner":
        """A text conditioner around a frozen encoder, its config read off the encoder (context
        length, width, padding mask); `pretrained`: the folder name recorded in the config."""
        text = TextEncoderConfig(max_length=encoder.max_length, width=encoder.width,
                                 attend_to_padding=encoder.attend_to_padding, pretrained=pretrained)
        return cls(ConditioningConfig(kind="text", text=text, masked_image=masked_image), encoder)

    @classmethod
    def from_data(cls, cfg: ConditioningConfig, data: ImageData) -> "TextConditioner":
        """The frozen encoder of cfg.text.pretrained, or a BPE vocabulary learned on the training
        captions."""
        if cfg.text.pretrained:
            return cls(cfg, PretrainedText.from_folder(cfg.text.pretrained, cfg.text.max_length,
                                                       cfg.text.attend_to_padding))
        return cls(cfg,
                   CaptionTokenizer.train(list(data.captions),
                                          cfg.text.vocab_size, cfg.text.max_length))

    @classmethod
    def from_metadata(cls, cfg: ConditioningConfig, metadata: dict,
                      folder: Path) -> "TextConditioner":
        """The stored vocabulary, or the frozen encoder's folder (a relative one lies beside the
        checkpoint)."""
        if cfg.text.pretrained:
            local = folder / cfg.text.pretrained
            return cls(cfg,
                       PretrainedText.from_folder(local if local.is_dir() else cfg.text.pretrained,
                                                  cfg.text.max_length, cfg.text.attend_to_padding))
        return cls(cfg, CaptionTokenizer.from_json(metadata["tokenizer"], cfg.text))

    def metadata(self) -> dict:
        # a frozen one: its folder, in cfg
        return {} if self.frozen else {"tokenizer": self.tokenizer.to_json()}

    def resume(self, metadata: dict) -> None:
        """Continue a run with the vocabulary it started with."""
        if not self.frozen:
            self.tokenizer = CaptionTokenizer.from_json(metadata["tokenizer"], self.config.text)

    @property
    def frozen(self) -> bool:
        return isinstance(self.tokenizer, PretrainedText)

    @property
    def context_dim(self) -> int:
        return self.tokenizer.width if self.frozen else self.config.text.width

    def to(self, *args, **kwargs) -> "TextConditioner":
        if self.frozen:
            self.tokenizer.to(*args, **kwargs)
        return super().to(*args, **kwargs)

    def encode(self, tokens: Tokens) -> Cond:
        if self.frozen:
            return Cond(context=self.tokenizer.encode(tokens), context_mask=tokens.mask)
        return super().encode(tokens)

    def null_input(self) -> str:
        return ""

    def training_inputs(self, data: ImageData, index: torch.Tensor) -> list[str]:
        return [data.captions[i] for i in index.tolist()]

    def spatial(self, latent_size: tuple[int, int], *, masked_latent: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> Cond:
        if not self.inpaints:
            return super().spatial(latent_size)
        return Cond(concat=masked_image_concat(self.config, masked_latent, mask))
