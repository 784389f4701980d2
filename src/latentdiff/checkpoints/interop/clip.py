"""Stable Diffusion's frozen text encoders from the weights inside a single file, as `transformers`
CLIPTextModels.

SD 1.x (`FrozenCLIPEmbedder`): a CLIPTextModel under `cond_stage_model.transformer.` (plus the stale
`text_model.embeddings.position_ids` buffer of old transformers releases, dropped here); quick-GELU
(CLIP ViT-L/14). SD 2.x (`FrozenOpenCLIPEmbedder`): an OpenCLIP text tower under
`cond_stage_model.model.` (token_embedding, positional_embedding, transformer.resblocks.N.{ln_1,
attn.in_proj_*, attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj}, ln_final); GELU; the context is ln_final
of the penultimate block's output (`layer: penultimate`), i.e. a CLIPTextModel of one block fewer.
Both: causal attention, heads of 64 channels, the architecture read off the weights. The tokenizer
(vocab.json, merges.txt) is not in the file: it comes from a local folder or the local Hugging Face
cache under the config's `version` (default openai/clip-vit-large-patch14), never from the network.
"""

import re
from pathlib import Path

import torch

from latentdiff.conditioning.pretrained import PretrainedText, import_transformers
from latentdiff.errors import UserError

PREFIX = "cond_stage_model.transformer."
OPEN_CLIP_PREFIX = "cond_stage_model.model."
OPEN_CLIP_NAMES = {"ln_1.": "layer_norm1.", "ln_2.": "layer_norm2.",
                   "attn.out_proj.": "self_attn.out_proj.",
                   "mlp.c_fc.": "mlp.fc1.", "mlp.c_proj.": "mlp.fc2."}
DEFAULT_VERSION = "openai/clip-vit-large-patch14"


def clip_text_config(weights: dict[str, torch.Tensor], tokenizer, activation: str = "quick_gelu"):
    """CLIPTextConfig read off the text tower's weights (names without the `text_model.` prefix)."""
    transformers = import_transformers()
    vocab, width = weights["embeddings.token_embedding.weight"].shape
    layers = {int(m.group(1)) for k in weights if (m := re.match(r"encoder\.layers\.(\d+)\.", k))}
    return transformers.CLIPTextConfig(
        vocab_size=vocab, hidden_size=width, num_hidden_layers=len(layers),
        num_attention_heads=max(1, width // 64),
        intermediate_size=weights["encoder.layers.0.mlp.fc1.weight"].shape[0],
        max_position_embeddings=weights["embeddings.position_embedding.weight"].shape[0],
        hidden_act=activation, layer_norm_eps=1e-5, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)


def clip_tokenizer(version: str, folder: str | Path | None):
    transformers = import_transformers()
    source = str(folder) if folder is not None else version
    try:
        return transformers.CLIPTokenizer.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError):
        raise UserError(f"the CLIP tokenizer {source!r} (vocab.json, merges.txt) is not available "
                        f"locally; pass --tokenizer FOLDER") from None


def open_clip_weights(state: dict[str, torch.Tensor], skip_last: int) -> dict[str, torch.Tensor]:
    """OpenCLIP text-tower weights (`cond_stage_model.model.*`) → CLIPTextModel names without
    `text_model.`, the last `skip_last` blocks left out (1 for SD 2's penultimate layer); in_proj
    (3d, d) splits into q, k, v (d, d) each."""
    weights = {k[len(OPEN_CLIP_PREFIX):]: v.float() for k,
               v in state.items() if k.startswith(OPEN_CLIP_PREFIX)}
    if "token_embedding.weight" not in weights:
        raise UserError("the checkpoint holds no OpenCLIP text encoder "
                        f"({OPEN_CLIP_PREFIX}token_embedding.weight)")
    blocks = len({m.group(1) for k in weights
                  if (m := re.match(r"transformer\.resblocks\.(\d+)\.", k))})
    out = {"embeddings.token_embedding.weight": weights["token_embedding.weight"],
           "embeddings.position_embedding.weight": weights["positional_embedding"],
           "final_layer_norm.weight": weights["ln_final.weight"],
           "final_layer_norm.bias": weights["ln_final.bias"]}
    for i in range(blocks - skip_last):
        source, target = f"transformer.resblocks.{i}.", f"encoder.layers.{i}."
        for kind in ("weight", "bias"):
            for name, part in zip(("q_proj", "k_proj", "v_proj"),
                                  weights[f"{source}attn.in_proj_{kind}"].chunk(3)):
                out[f"{target}self_attn.{name}.{kind}"] = part
            out |= {f"{target}{new}{kind}": weights[f"{source}{old}{kind}"] for old,
                    new in OPEN_CLIP_NAMES.items()}
    return out


def frozen_clip_text(state: dict[str, torch.Tensor], max_length: int,
                     version: str = DEFAULT_VERSION,
                     tokenizer_folder: str | Path | None = None,
                     open_clip_layer: str | None = None) -> PretrainedText:
    """The checkpoint's CLIP text encoder as a frozen PretrainedText that attends to every one of
    its `max_length` positions (no padding mask, as FrozenCLIPEmbedder); `open_clip_layer`
    ("last" | "penultimate"): SD 2's OpenCLIP tower instead, read up to that layer."""
    if open_clip_layer is not None:
        if open_clip_layer not in ("last", "penultimate"):
            raise UserError(f"FrozenOpenCLIPEmbedder layer {open_clip_layer!r} is not supported "
                            "(last, penultimate)")
        weights, activation = open_clip_weights(state, int(open_clip_layer == "penultimate")), "gelu"
    else:
        weights = {k[len(PREFIX):]: v.float() for k, v in state.items() if k.startswith(PREFIX)}
        if not weights:
            raise UserError(f"the checkpoint holds no CLIP text encoder ({PREFIX}*)")
        weights = {k.removeprefix("text_model."): v for k,
                   v in weights.items() if not k.endswith("position_ids")}
        activation = "quick_gelu"
    tokenizer = clip_tokenizer(version, tokenizer_folder)
    model = import_transformers().CLIPTextModel(clip_text_config(weights, tokenizer, activation))
    # transformers 4 nests the tower
    if any(k.startswith("text_model.") for k in model.state_dict()):
        weights = {f"text_model.{k}": v for k, v in weights.items()}
    result = model.load_state_dict(weights, strict=False)
    problems = [k for k in [*result.missing_keys, *result.unexpected_keys]
                if not k.endswith("position_ids")]
    if problems:
        raise UserError("the CLIP text encoder does not fit CLIPTextModel: "
                        f"{', '.join(problems[:5])}")
    return PretrainedText(tokenizer, model, max_length, attend_to_padding=True)
