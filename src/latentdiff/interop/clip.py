"""Stable Diffusion v1's frozen CLIP text encoder (`FrozenCLIPEmbedder`) from the weights inside a single file.

The file holds a `transformers` CLIPTextModel under `cond_stage_model.transformer.` (plus the stale
`text_model.embeddings.position_ids` buffer of old transformers releases, dropped here). Its architecture is read off
the weights (width, depth, vocabulary, context length; heads of 64 channels, quick-GELU: CLIP ViT-L/14's text tower);
the tokenizer (vocab.json, merges.txt) is not in the file: it comes from a local folder or the local Hugging Face
cache under the config's `version` (default openai/clip-vit-large-patch14), never from the network.
"""

import re
from pathlib import Path

import torch

from latentdiff.conditioning.pretrained import PretrainedText, _transformers
from latentdiff.errors import UserError

PREFIX = "cond_stage_model.transformer."
DEFAULT_VERSION = "openai/clip-vit-large-patch14"


def clip_text_config(weights: dict[str, torch.Tensor], tokenizer):
    """CLIPTextConfig read off the text tower's weights (names without the `text_model.` prefix)."""
    transformers = _transformers()
    vocab, width = weights["embeddings.token_embedding.weight"].shape
    layers = {int(m.group(1)) for k in weights if (m := re.match(r"encoder\.layers\.(\d+)\.", k))}
    return transformers.CLIPTextConfig(
        vocab_size=vocab, hidden_size=width, num_hidden_layers=len(layers), num_attention_heads=max(1, width // 64),
        intermediate_size=weights["encoder.layers.0.mlp.fc1.weight"].shape[0],
        max_position_embeddings=weights["embeddings.position_embedding.weight"].shape[0],
        hidden_act="quick_gelu", layer_norm_eps=1e-5, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)


def clip_tokenizer(version: str, folder: str | Path | None):
    transformers = _transformers()
    source = str(folder) if folder is not None else version
    try:
        return transformers.CLIPTokenizer.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError):
        raise UserError(f"the CLIP tokenizer {source!r} (vocab.json, merges.txt) is not available locally; pass "
                        f"--tokenizer FOLDER") from None


def frozen_clip_text(state: dict[str, torch.Tensor], max_length: int, version: str = DEFAULT_VERSION,
                     tokenizer_folder: str | Path | None = None) -> PretrainedText:
    """The checkpoint's CLIP text encoder as a frozen PretrainedText that attends to every one of its
    `max_length` positions (as FrozenCLIPEmbedder: no padding mask, the last layer's normalised states)."""
    weights = {k[len(PREFIX):]: v.float() for k, v in state.items() if k.startswith(PREFIX)}
    if not weights:
        raise UserError(f"the checkpoint holds no CLIP text encoder ({PREFIX}*)")
    weights = {k.removeprefix("text_model."): v for k, v in weights.items() if not k.endswith("position_ids")}
    tokenizer = clip_tokenizer(version, tokenizer_folder)
    model = _transformers().CLIPTextModel(clip_text_config(weights, tokenizer))
    if any(k.startswith("text_model.") for k in model.state_dict()):  # transformers 4 nests the tower
        weights = {f"text_model.{k}": v for k, v in weights.items()}
    result = model.load_state_dict(weights, strict=False)
    problems = [k for k in [*result.missing_keys, *result.unexpected_keys] if not k.endswith("position_ids")]
    if problems:
        raise UserError(f"the CLIP text encoder does not fit CLIPTextModel: {', '.join(problems[:5])}")
    return PretrainedText(tokenizer, model, max_length, attend_to_padding=True)
