"""DiT checkpoints → latentdiff's `DiT`: diffusers' `DiTTransformer2DModel` folders (config.json +
weights, e.g. a DiTPipeline's transformer/) and the original DiT code's checkpoints (a state dict,
or a training checkpoint holding "ema" / "model").

The original's module names are latentdiff's, so its weights load by name (its fixed `pos_embed`
is recomputed, not read). diffusers renames them and gives every block its own copy of the
timestep and class embedders (its conversion copies one set into all); they must be equal, as
latentdiff's DiT has one set. diffusers' DiT differs from the original in two numbers, both in the
config here: its timestep frequencies are 10000^(−i/(half − 1)) (time_frequency_shift=1) and the LN
before each MLP has eps 1e-5 (mlp_norm_eps).
"""

from pathlib import Path

import torch

from latentdiff.checkpoints.interop.compvis import assign_weights
from latentdiff.checkpoints.interop.diffusers_configs import read_json
from latentdiff.checkpoints.interop.files import load_pickle, read_state_dict
from latentdiff.config import DIT_SIZES, DiTConfig
from latentdiff.dit import DiT
from latentdiff.errors import UserError

# DiTTransformer2DModel options that would change the architecture away from DiT's: refused
DIFFUSERS_DIT_FIXED = {"norm_type": "ada_norm_zero", "activation_fn": "gelu-approximate",
                       "norm_elementwise_affine": False, "attention_bias": True,
                       "upcast_attention": False}
EMBEDDER = "transformer_blocks.{i}.norm1.emb."


def dit_from_diffusers(c: dict) -> DiTConfig:
    """A DiTTransformer2DModel config.json → DiTConfig, or a one-line error naming what differs."""
    changed = [k for k, v in DIFFUSERS_DIT_FIXED.items() if c.get(k, v) != v]
    if changed:
        raise UserError(f"this DiTTransformer2DModel sets {', '.join(changed)}, which latentdiff's "
                        "DiT does not build")
    in_channels = int(c.get("in_channels", 4))
    out_channels = int(c.get("out_channels") or in_channels)
    learn_sigma = out_channels == 2 * in_channels
    return DiTConfig(in_channels=in_channels,
                     out_channels=in_channels if learn_sigma else out_channels,
                     patch_size=int(c.get("patch_size", 2)),
                     hidden_size=int(c.get("num_attention_heads", 16)) * int(c.get("attention_head_dim", 72)),
                     depth=int(c.get("num_layers", 28)), num_heads=int(c.get("num_attention_heads", 16)),
                     # LabelEmbedding's table: the classes + the null class of its label dropout
                     num_classes=int(c.get("num_embeds_ada_norm", 1000)) + 1,
                     learn_sigma=learn_sigma, time_frequency_shift=1,
                     mlp_norm_eps=float(c.get("norm_eps", 1e-5)))


def _shared_embedders(state: dict[str, torch.Tensor], depth: int, what: str) -> dict:
    """Block 0's timestep/class embedders as the DiT's one set; the others must equal it."""
    first = EMBEDDER.format(i=0)
    shared = {k[len(first):]: v for k, v in state.items() if k.startswith(first)}
    for i in range(1, depth):
        prefix = EMBEDDER.format(i=i)
        for name, value in shared.items():
            other = state.get(prefix + name)
            if other is None or not torch.equal(other, value):
                raise UserError(f"{what}: block {i}'s timestep/class embedder differs from block "
                                "0's; latentdiff's DiT shares one (as the original DiT)")
    return {"t_embedder.mlp.0.weight": shared["timestep_embedder.linear_1.weight"],
            "t_embedder.mlp.0.bias": shared["timestep_embedder.linear_1.bias"],
            "t_embedder.mlp.2.weight": shared["timestep_embedder.linear_2.weight"],
            "t_embedder.mlp.2.bias": shared["timestep_embedder.linear_2.bias"],
            "y_embedder.embedding_table.weight": shared["class_embedder.embedding_table.weight"]}


BLOCK_NAMES = {"norm1.linear": "adaLN_modulation.1", "attn1.to_out.0": "attn.proj",
               "ff.net.0.proj": "mlp.fc1", "ff.net.2": "mlp.fc2"}
TOP_NAMES = {"pos_embed.proj": "x_embedder.proj", "proj_out_1": "final_layer.adaLN_modulation.1",
             "proj_out_2": "final_layer.linear"}


def dit_state_from_diffusers(state: dict[str, torch.Tensor], cfg: DiTConfig,
                             what: str) -> dict[str, torch.Tensor]:
    """diffusers' DiT weight names → the original's (latentdiff's); q, k, v fused into qkv."""
    out = _shared_embedders(state, cfg.depth, what)
    for ours, theirs in ((v, k) for k, v in TOP_NAMES.items()):
        for kind in ("weight", "bias"):
            out[f"{ours}.{kind}"] = state[f"{theirs}.{kind}"]
    for i in range(cfg.depth):
        block = f"transformer_blocks.{i}."
        for theirs, ours in BLOCK_NAMES.items():
            for kind in ("weight", "bias"):
                out[f"blocks.{i}.{ours}.{kind}"] = state[f"{block}{theirs}.{kind}"]
        for kind in ("weight", "bias"):
            out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat(
                [state[f"{block}attn1.to_{x}.{kind}"] for x in "qkv"])
    claimed = {k for k in state if k.startswith(tuple(f"{t}." for t in TOP_NAMES))
               or ".norm1.emb." in k or any(f".{n}." in k for n in BLOCK_NAMES)
               or ".attn1.to_" in k}
    unclaimed = sorted(set(state) - claimed)
    if unclaimed:
        raise UserError(f"{what}: {len(unclaimed)} weights have no counterpart "
                        f"({', '.join(unclaimed[:4])}); the architecture does not match its config")
    return out


def load_diffusers_dit(folder: str | Path, variant: str | None = None,
                       dtype: torch.dtype = torch.float32) -> DiT:
    """A DiTTransformer2DModel folder (config.json + weights) as latentdiff's DiT in eval mode."""
    from latentdiff.checkpoints.interop.diffusers_folder import read_component

    folder = Path(folder)
    cfg = dit_from_diffusers(read_json(folder / "config.json"))
    state = dit_state_from_diffusers(read_component(folder, variant), cfg, str(folder))
    with torch.device("meta"):
        dit = DiT(cfg)
    return assign_weights(dit, state, str(folder), dtype)


def original_dit_config(state: dict[str, torch.Tensor], num_heads: int | None = None) -> DiTConfig:
    """The DiTConfig of an original-layout state dict: sizes from the weights' shapes; the head
    count (not in the weights) from Table 1's sizes unless given."""
    if "x_embedder.proj.weight" not in state or "final_layer.linear.weight" not in state:
        raise UserError("not a DiT checkpoint: it has no x_embedder.proj / final_layer.linear "
                        "weights")
    hidden, in_channels, p, _ = state["x_embedder.proj.weight"].shape
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    heads = num_heads or next((h for d, w, h in DIT_SIZES.values() if w == hidden), None)
    if heads is None:
        raise UserError(f"a DiT of width {hidden} is none of the sizes S/B/L/XL; give its head "
                        "count (num_heads)")
    out = state["final_layer.linear.weight"].shape[0] // (p * p)
    table = state.get("y_embedder.embedding_table.weight")
    return DiTConfig(in_channels=in_channels, out_channels=in_channels if out == 2 * in_channels else out,
                     patch_size=p, hidden_size=hidden, depth=depth, num_heads=heads,
                     num_classes=None if table is None else table.shape[0],
                     learn_sigma=out == 2 * in_channels,
                     frequency_dim=state["t_embedder.mlp.0.weight"].shape[1])


def load_original_dit(path: str | Path, num_heads: int | None = None, use_ema: bool = True,
                      dtype: torch.dtype = torch.float32) -> DiT:
    """An original DiT checkpoint (.pt/.pth/.safetensors: the released state dicts, or a training
    checkpoint with "ema" and "model") as latentdiff's DiT in eval mode."""
    path = Path(path)
    pickled = path.is_file() and path.suffix != ".safetensors"
    state = load_pickle(path) if pickled else read_state_dict(path)
    if not isinstance(state, dict):
        raise UserError(f"{path} holds a {type(state).__name__}, not a DiT state dict")
    nested = "ema" if use_ema and "ema" in state else "model" if "model" in state else None
    if nested is not None:
        state = state[nested]
    state = {k.removeprefix("module."): v for k, v in state.items()
             if isinstance(v, torch.Tensor) and k != "pos_embed"}
    cfg = original_dit_config(state, num_heads)
    with torch.device("meta"):
        dit = DiT(cfg)
    return assign_weights(dit, state, str(path), dtype)
