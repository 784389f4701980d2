"""The denoiser network F_θ as one choice among backbones — the paper's UNet (Sec. 3.2), U-ViT or
DiT — and eDiff-I's ensembles of expert networks per noise range; what a checkpoint stores of the
choice, and what one network evaluation costs.

Every backbone has the same call, net(x, c_noise, context=, class_labels=, concat=, context_mask=,
guidance=) → (B, out_channels, h, w), a `config` (a `NetworkConfig`) and `gradient_checkpointing`,
so the denoiser, samplers, conditioning and training never ask which one it is.
"""

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from latentdiff.config import BACKBONES, DiTConfig, NetworkConfig, UNetConfig, from_dict, to_dict
from latentdiff.dit import DiT
from latentdiff.errors import UserError
from latentdiff.unet import UNetModel
from latentdiff.uvit import UViT


def build_network(cfg: NetworkConfig) -> nn.Module:
    """The network a config describes (its class follows from the config's type)."""
    if isinstance(cfg, UNetConfig):
        return UNetModel(cfg)
    if isinstance(cfg, DiTConfig):
        return DiT(cfg)
    return UViT(cfg)


def backbone_name(cfg: NetworkConfig) -> str:
    """"unet", "uvit" or "dit": the train config's `backbone` for this config."""
    return next(name for name, kind in BACKBONES.items() if isinstance(cfg, kind))


class ExpertNetwork(nn.Module):
    """eDiff-I's ensemble of expert denoisers (Balaji et al. 2022, Sec. 4): K networks of one
    config, expert k for σ ∈ [b_k, b_{k+1}) with b_0 = 0 < b_1 < … < b_{K−1} < b_K = ∞
    (`sigma_boundaries` = (b_1, …, b_{K−1})): a σ on a boundary goes to the higher-noise expert.
    Each sample of a batch is routed by its c_noise: every preconditioning's c_noise(σ) increases
    with σ, so `noise_edges` = c_noise(b_k) route exactly as σ does (the network never sees σ).
    """

    def __init__(self, experts: list[nn.Module], sigma_boundaries: tuple[float, ...],
                 noise_edges: torch.Tensor):
        super().__init__()
        if len(experts) != len(sigma_boundaries) + 1 or len(noise_edges) != len(sigma_boundaries):
            raise ValueError("K experts need K − 1 σ boundaries and as many noise edges")
        self.experts = nn.ModuleList(experts)
        self.sigma_boundaries = tuple(sigma_boundaries)
        self.register_buffer("noise_edges", noise_edges.float(), persistent=False)

    @property
    def config(self) -> NetworkConfig:
        return self.experts[0].config

    def gradient_checkpointing(self, enabled: bool = True) -> "ExpertNetwork":
        for expert in self.experts:
            expert.gradient_checkpointing(enabled)
        return self

    def route(self, c_noise: torch.Tensor) -> torch.Tensor:
        """(B,) c_noise → (B,) int64 expert index k with edge_{k−1} ≤ c_noise < edge_k."""
        edges = self.noise_edges.to(c_noise.device)
        return torch.searchsorted(edges, c_noise.float().contiguous(), right=True)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, **cond) -> torch.Tensor:
        timesteps = torch.as_tensor(timesteps, device=x.device).expand(len(x))
        index = self.route(timesteps)
        first = int(index[0])
        if bool((index == first).all()):  # a sampler's batch: one σ, one expert
            return self.experts[first](x, timesteps, **cond)
        out = None
        for k in index.unique().tolist():
            rows = index == k
            y = self.experts[k](x[rows], timesteps[rows],
                                **{name: _rows(value, rows, len(x)) for name, value in cond.items()})
            if out is None:
                out = y.new_zeros((len(x), *y.shape[1:]))
            out[rows] = y
        return out


def _rows(value, rows: torch.Tensor, batch: int):
    """The selected rows of a per-sample input ((B, …) tensor); anything else (None, a scalar
    guidance scale) as it is."""
    if isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == batch:
        return value[rows]
    return value


def expert_network(cfg: NetworkConfig, sigma_boundaries: tuple[float, ...], c_noise) -> nn.Module:
    """K = len(sigma_boundaries) + 1 fresh experts of `cfg`, routed by `c_noise` (the model's
    preconditioning's σ → c_noise); with no boundaries, the single network itself."""
    if not sigma_boundaries:
        return build_network(cfg)
    edges = c_noise(torch.tensor(sigma_boundaries, dtype=torch.float32))
    return ExpertNetwork([build_network(cfg) for _ in range(len(sigma_boundaries) + 1)],
                         tuple(sigma_boundaries), edges)


def network_metadata(network: nn.Module) -> dict:
    """What a checkpoint stores to rebuild `network`: its backbone, config and σ boundaries."""
    cfg = network.config
    name = backbone_name(cfg)
    experts = list(network.sigma_boundaries) if isinstance(network, ExpertNetwork) else []
    return {"backbone": name, f"{name}_config": to_dict(cfg), "experts": experts}


def network_config(metadata: dict) -> NetworkConfig:
    """The network config a checkpoint stores (checkpoints without `backbone` hold a UNet)."""
    name = metadata.get("backbone", "unet")
    if name not in BACKBONES or f"{name}_config" not in metadata:
        raise UserError(f"the checkpoint's network {name!r} is unknown to this latentdiff; "
                        "upgrade latentdiff")
    return from_dict(BACKBONES[name], metadata[f"{name}_config"])


def network_fields(metadata: dict) -> dict:
    """The network part of checkpoint metadata as one flat dict (backbone, experts and each config
    field, fields newer than the checkpoint at their defaults), to compare two runs' networks field
    by field."""
    return {"backbone": metadata.get("backbone", "unet"),
            "experts": list(metadata.get("experts", ())), **to_dict(network_config(metadata))}


@dataclass(frozen=True)
class NetworkCost:
    """A network's size and the cost of one evaluation: `parameters` (all experts counted),
    `gflops` (10⁹ floating-point operations, a multiply-add counting 2, as torch's FLOP counter
    counts matrix products and convolutions) for one sample at the latent size it was measured on."""

    parameters: int
    gflops: float
    latent_shape: tuple[int, int, int]


def _cpu_attention_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    """torch's FLOP counter knows the GPU attention kernels only; the CPU one costs the same
    2·(QKᵀ) + 2·(PV) multiply-adds (shapes in, as the counter passes them)."""
    return sdpa_flop_count(query, key, value)


# what the counter misses: F.scaled_dot_product_attention's CPU kernel
COUNTED_EXTRA = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops}


def network_cost(network: nn.Module, latent_shape: tuple[int, int, int], **cond) -> NetworkCost:
    """Measure one evaluation of `network` on one latent of `latent_shape` (c, h, w) with the
    network inputs `cond` (one sample's), by torch's FLOP counter; an ensemble of experts costs
    what one expert does."""
    parameters = sum(p.numel() for p in network.parameters())
    net = network.experts[0] if isinstance(network, ExpertNetwork) else network
    weight = next(net.parameters())
    x = torch.zeros((1, *latent_shape), dtype=weight.dtype, device=weight.device)
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=COUNTED_EXTRA) as counter:
        net(x, torch.full((1,), 500.0, device=weight.device), **cond)
    return NetworkCost(parameters, counter.get_total_flops() / 1e9, tuple(latent_shape))
