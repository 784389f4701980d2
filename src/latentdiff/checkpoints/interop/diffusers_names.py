"""Parameter names of latentdiff's UNet and first stage (the original CompVis names) ⇄ diffusers'
names.

Each map is a bijection built from the architecture's config, so converting a state dict there and
back gives the same tensors under the same names. The UNet maps onto diffusers'
`UNet2DConditionModel` (cross-attention models):

    time_embed.{0,2}                 ↔ time_embedding.linear_{1,2}        label_emb ↔ class_embedding
    input_blocks.0.0                 ↔ conv_in
    input_blocks.{1 + i(R+1) + j}.0  ↔ down_blocks.{i}.resnets.{j}       (.1 ↔ down_blocks.{i}.attentions.{j})
    input_blocks.{(i+1)(R+1)}.0.op   ↔ down_blocks.{i}.downsamplers.0.conv
    middle_block.{0,1,2}             ↔ mid_block.{resnets.0, attentions.0, resnets.1}
    output_blocks.{u(R+1) + j}.0     ↔ up_blocks.{u}.resnets.{j}         (.1 ↔ up_blocks.{u}.attentions.{j})
    output_blocks.{u(R+1) + R}.{1|2}.conv ↔ up_blocks.{u}.upsamplers.0.conv
    out.{0,2}                        ↔ conv_norm_out, conv_out
    ResBlock in_layers.{0,2}, emb_layers.1, out_layers.{0,3}, skip_connection ↔ norm1, conv1, time_emb_proj, norm2,
    conv2, conv_shortcut; spatial transformers have the same names on both sides.

UNets without cross-attention map onto `UNet2DModel` (LDMPipeline): the same blocks, with
self-attention (`AttentionBlock`: norm, qkv, proj_out ↔ group_norm, to_q/to_k/to_v, to_out.0). Its
fused qkv (3C, C, 1) holds the channels [head][q|k|v][head channel] (the original legacy order):
`split_qkv` / `fuse_qkv` turn it into the three (C, C) projections and back, exactly.

The first stage maps onto `AutoencoderKL` / `VQModel`:
encoder.down.{i}.block.{j} ↔ encoder.down_blocks.{i}.resnets.{j},
decoder.up.{i} ↔ decoder.up_blocks.{L−1−i} (diffusers counts decoder levels from the bottom),
mid.block_{1,2} ↔ mid_block.resnets.{0,1},
mid.attn_1.{norm,q,k,v,proj_out} ↔ mid_block.attentions.0.{group_norm,to_q,to_k,to_v, to_out.0} (1×1
conv weights (C, C, 1, 1) ↔ linear (C, C)), nin_shortcut ↔ conv_shortcut, norm_out ↔ conv_norm_out.
"""

import torch

from latentdiff.config import AutoencoderConfig, UNetConfig
from latentdiff.nn.attention import AttentionBlock

RESBLOCK = {"in_layers.0.": "norm1.", "in_layers.2.": "conv1.", "emb_layers.1.": "time_emb_proj.",
            "out_layers.0.": "norm2.", "out_layers.3.": "conv2.",
            "skip_connection.": "conv_shortcut."}
VAE_RESBLOCK = {"nin_shortcut.": "conv_shortcut."}
# 1×1 conv ↔ linear
VAE_ATTENTION_PREFIXES = ("encoder.mid_block.attentions.0.", "decoder.mid_block.attentions.0.")
VAE_ATTENTION = {"norm.": "group_norm.", "q.": "to_q.", "k.": "to_k.", "v.": "to_v.",
                 "proj_out.": "to_out.0."}
# after split_qkv: to_q, to_k, to_v on both sides
SELF_ATTENTION = {"norm.": "group_norm.", "proj_out.": "to_out.0."}


def unet_blocks(cfg: UNetConfig) -> list[tuple[str, str, dict[str, str]]]:
    """(our module prefix, diffusers module prefix, renames inside the module) for every block of
    the UNet."""
    levels, per = len(cfg.channel_mult), cfg.num_res_blocks
    # spatial transformers keep their names
    inside = {} if cfg.context_dim is not None else SELF_ATTENTION
    blocks = [("time_embed.0.", "time_embedding.linear_1.", {}),
              ("time_embed.2.", "time_embedding.linear_2.", {}),
              ("input_blocks.0.0.", "conv_in.", {}), ("out.0.", "conv_norm_out.", {}),
              ("out.2.", "conv_out.", {}),
              ("middle_block.0.", "mid_block.resnets.0.", RESBLOCK),
              ("middle_block.1.", "mid_block.attentions.0.", inside),
              ("middle_block.2.", "mid_block.resnets.1.", RESBLOCK)]
    if cfg.num_classes is not None:
        blocks.append(("label_emb.", "class_embedding.", {}))
    for i in range(levels):
        attention = 2 ** i in cfg.attention_resolutions
        for j in range(per):
            n = 1 + i * (per + 1) + j
            blocks.append((f"input_blocks.{n}.0.", f"down_blocks.{i}.resnets.{j}.", RESBLOCK))
            if attention:
                blocks.append((f"input_blocks.{n}.1.", f"down_blocks.{i}.attentions.{j}.", inside))
        if i < levels - 1:
            blocks.append((f"input_blocks.{(i + 1) * (per + 1)}.0.op.",
                           f"down_blocks.{i}.downsamplers.0.conv.", {}))
    for u in range(levels):
        attention = 2 ** (levels - 1 - u) in cfg.attention_resolutions
        for j in range(per + 1):
            n = u * (per + 1) + j
            blocks.append((f"output_blocks.{n}.0.", f"up_blocks.{u}.resnets.{j}.", RESBLOCK))
            if attention:
                blocks.append((f"output_blocks.{n}.1.", f"up_blocks.{u}.attentions.{j}.", inside))
            if u < levels - 1 and j == per:
                blocks.append((f"output_blocks.{n}.{2 if attention else 1}.conv.",
                               f"up_blocks.{u}.upsamplers.0.conv.",
                               {}))
    return blocks


def self_attention_heads(unet: torch.nn.Module) -> dict[str, int]:
    """{module prefix: head count} of the UNet's self-attention blocks (`AttentionBlock`; none in
    cross-attention UNets), read off the modules themselves (a meta-device UNet will do)."""
    return {f"{name}.": m.num_heads for name,
            m in unet.named_modules() if isinstance(m, AttentionBlock)}


def split_qkv(state: dict[str, torch.Tensor], heads: dict[str, int]) -> dict[str, torch.Tensor]:
    """Our self-attention weights → separate projections: qkv (3C, C, 1) + (3C,) in [head][q|k|v][d]
    order → to_q, to_k, to_v (C, C) + (C,); proj_out (C, C, 1) → (C, C). Other tensors pass
    through."""
    out = dict(state)
    for prefix, h in heads.items():
        for kind in ("weight", "bias"):
            fused = out.pop(f"{prefix}qkv.{kind}")
            parts = fused.reshape(h, 3, fused.shape[0] // (3 * h), -1)  # (H, q|k|v, d, C or 1)
            for i, name in enumerate(("to_q", "to_k", "to_v")):
                out[f"{prefix}{name}.{kind}"] = parts[:, i].reshape(fused.shape[0] // 3, *fused.shape[1:-1])
        out[f"{prefix}proj_out.weight"] = out[f"{prefix}proj_out.weight"].flatten(1)
    return out


def fuse_qkv(state: dict[str, torch.Tensor], heads: dict[str, int]) -> dict[str, torch.Tensor]:
    """The inverse of `split_qkv`."""
    out = dict(state)
    for prefix, h in heads.items():
        for kind in ("weight", "bias"):
            q, k, v = (out.pop(f"{prefix}{name}.{kind}") for name in ("to_q", "to_k", "to_v"))
            parts = torch.stack([t.reshape(h, t.shape[0] // h, *t.shape[1:]) for t in (q, k, v)],
                                dim=1)
            out[f"{prefix}qkv.{kind}"] = parts.reshape(3 * q.shape[0], *q.shape[1:],
                                                       *((1,) if kind == "weight" else ()))
        out[f"{prefix}proj_out.weight"] = out[f"{prefix}proj_out.weight"][:, :, None]
    return out


def autoencoder_blocks(cfg: AutoencoderConfig) -> list[tuple[str, str, dict[str, str]]]:
    """(our module prefix, diffusers module prefix, renames inside the module) for every block of
    the first stage."""
    levels, per = len(cfg.channel_mult), cfg.num_res_blocks
    blocks = [("quant_conv.", "quant_conv.", {}), ("post_quant_conv.", "post_quant_conv.", {}),
              ("quantize.", "quantize.", {})]
    for part in ("encoder", "decoder"):
        blocks += [(f"{part}.conv_in.", f"{part}.conv_in.", {}),
                   (f"{part}.conv_out.", f"{part}.conv_out.", {}),
                   (f"{part}.norm_out.", f"{part}.conv_norm_out.", {}),
                   (f"{part}.mid.block_1.", f"{part}.mid_block.resnets.0.", VAE_RESBLOCK),
                   (f"{part}.mid.block_2.", f"{part}.mid_block.resnets.1.", VAE_RESBLOCK),
                   (f"{part}.mid.attn_1.", f"{part}.mid_block.attentions.0.", VAE_ATTENTION)]
    for i in range(levels):
        blocks += [(f"encoder.down.{i}.block.{j}.",
                    f"encoder.down_blocks.{i}.resnets.{j}.", VAE_RESBLOCK)
                   for j in range(per)]
        blocks += [(f"decoder.up.{i}.block.{j}.",
                    f"decoder.up_blocks.{levels - 1 - i}.resnets.{j}.", VAE_RESBLOCK)
                   for j in range(per + 1)]
        if i < levels - 1:
            blocks.append((f"encoder.down.{i}.downsample.conv.",
                           f"encoder.down_blocks.{i}.downsamplers.0.conv.", {}))
        if i > 0:
            blocks.append((f"decoder.up.{i}.upsample.conv.",
                           f"decoder.up_blocks.{levels - 1 - i}.upsamplers.0.conv.",
                           {}))
    return blocks


def _rename(name: str, blocks: list[tuple[str, str, dict[str, str]]],
            to_diffusers: bool) -> str | None:
    for ours, theirs, inner in blocks:
        source, target = (ours, theirs) if to_diffusers else (theirs, ours)
        if name.startswith(source):
            rest = name[len(source):]
            for a, b in inner.items():
                a, b = (a, b) if to_diffusers else (b, a)
                if rest.startswith(a):
                    rest = b + rest[len(a):]
                    break
            return target + rest
    return None


def convert_names(state: dict[str, torch.Tensor], blocks: list[tuple[str, str, dict[str, str]]],
                  to_diffusers: bool) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename a state dict (ours → diffusers or back); returns it and the names no block claims.
    1×1-conv weights of the first stage's attention become linear weights in diffusers and 4-D again
    on the way back."""
    out, unclaimed = {}, []
    for name, tensor in state.items():
        new = _rename(name, blocks, to_diffusers)
        if new is None:
            unclaimed.append(name)
            continue
        if (new if to_diffusers else name).startswith(VAE_ATTENTION_PREFIXES) and name.endswith("weight") \
                and "norm" not in name:
            tensor = tensor.flatten(1) if to_diffusers else tensor[:, :, None, None]
        out[new] = tensor
    return out, unclaimed
