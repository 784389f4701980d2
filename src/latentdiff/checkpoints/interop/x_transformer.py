"""The text encoder of the original text-to-image LDMs (`BERTEmbedder`: txt2img-1p4B, text2img256)
as τ_θ.

BERTEmbedder is bert-base-uncased's WordPiece tokenizer (`max_seq_len` 77 tokens: [CLS] … [SEP]
[PAD]…; no padding mask anywhere, neither in the encoder nor in the UNet's cross-attention) followed
by an x-transformers `TransformerWrapper(attn_layers=Encoder(dim=n_embed, depth=n_layer))` trained
jointly with the UNet. That encoder is the paper's τ_θ: token + absolute position embedding, n_layer
× [x ← x + MHSA(LN x), x ← x + MLP(LN x)] (8 heads of 64 channels whatever the width, MLP 4× with
exact GELU), a final LN; i.e. latentdiff's `TextTransformer` with head_dim 64. Its keys under
`cond_stage_model.transformer.` map onto ours:

    token_emb, pos_emb.emb                                  → token_embedding, position_embedding
    attn_layers.layers.{2i}.0, .1.{to_q,to_k,to_v,to_out}     → layers.{i}.norm1, .attn.{to_q,to_k,to_v,to_out.0}
    attn_layers.layers.{2i+1}.0, .1.net.0.0, .1.net.2         → layers.{i}.norm2, .mlp.0, .mlp.2
    norm                                                    → final_norm
    to_logits                                               (an unused language-model head: left out)

The vocabulary is not in the file: it is read from a folder holding bert-base-uncased's vocab.txt
(`--tokenizer`), else from the local Hugging Face cache when huggingface_hub is installed; never
from the network.
"""

import re
from pathlib import Path

import torch

from latentdiff.conditioning.text import CaptionTokenizer
from latentdiff.config import TextEncoderConfig
from latentdiff.errors import UserError
# cond_stage_model.transformer.: CLIP in SD-v1, the x-transformer here
from latentdiff.checkpoints.interop.clip import PREFIX

ATTENTION = {"0.weight": "norm1.weight", "0.bias": "norm1.bias",
             "1.to_q.weight": "attn.to_q.weight",
             "1.to_k.weight": "attn.to_k.weight", "1.to_v.weight": "attn.to_v.weight",
             "1.to_out.weight": "attn.to_out.0.weight", "1.to_out.bias": "attn.to_out.0.bias"}
FEED_FORWARD = {"0.weight": "norm2.weight", "0.bias": "norm2.bias",
                "1.net.0.0.weight": "mlp.0.weight",
                "1.net.0.0.bias": "mlp.0.bias", "1.net.2.weight": "mlp.2.weight",
                "1.net.2.bias": "mlp.2.bias"}
HEAD_DIM = 64  # x-transformers' DEFAULT_DIM_HEAD; BERTEmbedder does not change it


def x_transformer_weights(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The file's BERTEmbedder transformer under latentdiff TextTransformer names (see the module
    docstring)."""
    source = {k[len(PREFIX):]: v for k, v in state.items() if k.startswith(PREFIX)}
    if "token_emb.weight" not in source:
        raise UserError("the checkpoint holds no BERTEmbedder transformer "
                        f"({PREFIX}token_emb.weight)")
    out = {"token_embedding.weight": source.pop("token_emb.weight"),
           "position_embedding.weight": source.pop("pos_emb.emb.weight"),
           "final_norm.weight": source.pop("norm.weight"),
           "final_norm.bias": source.pop("norm.bias")}
    for name, value in source.items():
        match = re.fullmatch(r"attn_layers\.layers\.(\d+)\.(.+)", name)
        if match is None:
            if not name.startswith("to_logits."):
                raise UserError(f"BERTEmbedder weight {PREFIX}{name} has no place in latentdiff's "
                                "text encoder")
            continue
        k, rest = int(match.group(1)), match.group(2)
        table = FEED_FORWARD if k % 2 else ATTENTION
        if rest not in table:
            raise UserError(f"BERTEmbedder weight {PREFIX}{name} is not an x-transformers pre-norm "
                            f"encoder layer (attention at even, feed-forward at odd indices)")
        out[f"layers.{k // 2}.{table[rest]}"] = value
    return out


def x_transformer_config(params: dict, weights: dict[str, torch.Tensor]) -> TextEncoderConfig:
    """The TextEncoderConfig of BERTEmbedder(n_embed, n_layer, vocab_size, max_seq_len), checked
    against the weights."""
    if not params.get("use_tokenizer", True):
        raise UserError("BERTEmbedder with use_tokenizer: false takes bounding-box tokens "
                        "(layout2img-openimages256), which latentdiff does not build; "
                        "text-to-image BERTEmbedder models load")
    vocab, width = weights["token_embedding.weight"].shape
    max_length, depth = weights["position_embedding.weight"].shape[0], len({k.split(".")[1] for k in weights
                                                                          if k.startswith("layers.")})
    expected = (int(params.get("n_embed", width)), int(params.get("n_layer", depth)),
                int(params.get("vocab_size", 30522)), int(params.get("max_seq_len", 77)))
    if expected != (width, depth, vocab, max_length):
        raise UserError("BERTEmbedder config (n_embed, n_layer, vocab_size, max_seq_len) = "
                        f"{expected} does not match the weights' "
                        f"{(width, depth, vocab, max_length)}")
    inner = weights["layers.0.attn.to_q.weight"].shape[0] if depth else HEAD_DIM
    return TextEncoderConfig(vocab_size=vocab, max_length=max_length, width=width, depth=depth,
                             num_heads=max(1, inner // HEAD_DIM), head_dim=HEAD_DIM,
                             mlp_ratio=weights["layers.0.mlp.0.weight"].shape[0] // width if depth
                             else 4,
                             attend_to_padding=True)


def bert_tokenizer(folder: str | Path | None, cfg: TextEncoderConfig) -> CaptionTokenizer:
    """bert-base-uncased's WordPiece tokenizer from `folder`/vocab.txt or the local Hugging Face
    cache."""
    vocab = Path(folder).expanduser() / "vocab.txt" if folder is not None else _cached_vocab()
    if vocab is None or not vocab.is_file():
        where = (f"{vocab} does not exist" if vocab is not None
                 else "it is not in the local Hugging Face cache")
        raise UserError(f"BERTEmbedder needs bert-base-uncased's vocab.txt and {where}; pass "
                        f"--tokenizer FOLDER (a folder holding vocab.txt)")
    tokenizer = CaptionTokenizer.bert_wordpiece(vocab, cfg.max_length)
    if tokenizer.vocab_size != cfg.vocab_size:
        raise UserError(f"{vocab} has {tokenizer.vocab_size} entries but the checkpoint's token "
                        f"embedding has {cfg.vocab_size}; pass the vocabulary the model was "
                        "trained with (bert-base-uncased: 30522)")
    return tokenizer


def _cached_vocab() -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache("bert-base-uncased", "vocab.txt")
    return Path(found) if isinstance(found, str) else None
