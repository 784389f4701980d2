"""Low-rank adapters (LoRA; Hu et al. 2022) as weight parametrizations: W ← W + (α/r)·B·A on chosen
`nn.Linear` and `nn.Conv2d` layers, A (r, in[, k, k]) random, B (out, r) zero, so an adapted network
starts as the original.

Written here rather than taken from `peft`: the adapter is a `torch.nn.utils.parametrize`
parametrization of each layer's weight (about 60 lines), so the adapted UNet stays the same module
with the same forward, deep-copies into EMAs, trains under Fabric like any module and merges into
plain weights for sampling at no extra cost (`merged_state`); `peft` would wrap the UNet in its own model
classes and key names for one feature. For a k×k convolution the product is taken over the input
channels: ΔW[o, i] = Σ_r B[o, r]·A[r, i] (a k×k convolution to r channels followed by a 1×1 one).
"""

import torch
from torch import nn
from torch.nn.utils import parametrize

# the key infix of an adapter's tensors: `<layer>.parametrizations.weight.0.{down,up}`
ADAPTER_KEY = "parametrizations.weight.0."


class LowRankDelta(nn.Module):
    """The parametrization W ↦ W + (α/r)·B·A of one layer's weight (out, in[, k, k])."""

    def __init__(self, weight: torch.Tensor, rank: int, alpha: float):
        super().__init__()
        out_channels, in_shape = weight.shape[0], weight.shape[1:]
        self.scale = alpha / rank
        self.down = nn.Parameter(torch.empty(rank, *in_shape))
        nn.init.kaiming_uniform_(self.down.view(rank, -1), a=5 ** 0.5)
        self.up = nn.Parameter(torch.zeros(out_channels, rank))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        delta = (self.up @ self.down.flatten(1)).view_as(weight)
        return weight + self.scale * delta.to(weight.dtype)


def adaptable_layers(network: nn.Module, prefixes: tuple[str, ...]) -> list[str]:
    """Names of the Linear and Conv2d layers of `network` under any of `prefixes` (module names)."""
    return [name for name, m in network.named_modules()
            if isinstance(m, (nn.Linear, nn.Conv2d)) and name.startswith(prefixes)]


def add_lora(network: nn.Module, names: list[str], rank: int, alpha: float) -> nn.Module:
    """Adapt the layers `names` of `network` in place (their weights frozen, the adapters
    trainable); returns the network."""
    for name in names:
        layer = network.get_submodule(name)
        layer.weight.requires_grad_(False)
        parametrize.register_parametrization(layer, "weight",
                                             LowRankDelta(layer.weight, rank, alpha))
    return network


def adapter_state(network: nn.Module) -> dict[str, torch.Tensor]:
    """The adapters' tensors only ({`<layer>.parametrizations.weight.0.down`: A, ...})."""
    return {k: v for k, v in network.state_dict().items() if ADAPTER_KEY in k}


def merged_state(network: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of the network without adapters, each adapted weight replaced by
    W + (α/r)·B·A: load it into a plain copy of the architecture. (The adapted network itself is left
    as it is: removing parametrizations in place would also change the deep copies that share their
    generated classes, e.g. EMAs.)"""
    merged = {}
    for key, value in network.state_dict().items():
        if ADAPTER_KEY in key:
            continue
        layer, found, _ = key.partition(".parametrizations.weight.original")
        merged[f"{layer}.weight" if found else key] = (
            network.get_submodule(layer).weight.detach().clone() if found else value)
    return merged


class AdapterView(nn.Module):
    """What an adapter checkpoint holds of an adapted network: its adapters and the layers named by
    `kept` prefixes (e.g. a new guidance embedding). `state_dict` and `load_state_dict` see those
    tensors only; everything else stays the base network's."""

    def __init__(self, network: nn.Module, kept: tuple[str, ...] = ()):
        super().__init__()
        object.__setattr__(self, "network", network)  # not a submodule: no second copy of its keys
        self.kept = kept

    def _wanted(self, key: str) -> bool:
        return ADAPTER_KEY in key or key.startswith(self.kept)

    def state_dict(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.network.state_dict().items() if self._wanted(k)}

    def load_state_dict(self, state: dict, strict: bool = True, assign: bool = False):
        unexpected = [k for k in state if not self._wanted(k)]
        if strict and (unexpected or state.keys() != self.state_dict().keys()):
            raise RuntimeError(f"adapter tensors do not fit: {sorted(state)[:3]}…")
        return self.network.load_state_dict(state, strict=False, assign=assign)
