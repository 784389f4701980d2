"""Post-hoc EMA (Karras et al. 2024, "Analyzing and Improving the Training Dynamics of Diffusion
Models", Sec. 3): choose the EMA length after training instead of before.

Training keeps two power-function EMAs (`ema.PowerEMA`, widths σ_rel,1 and σ_rel,2) and saves both
every `snapshot_every` steps to <run>/phema/step-NNNNNNN.safetensors. A power EMA with exponent γ
read after t updates averages the training weights θ_τ with the density p(τ) = (γ+1)·τ^γ/t^(γ+1) on
[0, t]. Any other profile p* (width σ_rel, at step t*) is approximated by the mixture Σ_i x_i·p_i
of the stored snapshots' profiles that is closest to it in L²(0, ∞): the normal equations G·x = b
with G_ij = ⟨p_i, p_j⟩, b_i = ⟨p_i, p*⟩ and

    ⟨p_i, p_j⟩ = (γ_i+1)(γ_j+1)·m^(γ_i+γ_j+1) / ((γ_i+γ_j+1)·t_i^(γ_i+1)·t_j^(γ_j+1)),  m = min(t_i, t_j)

(Sec. 3.2 and App. C.3); the weights are then θ* = Σ_i x_i·θ̂_i. `latentdiff ema CKPT --sigma-rel S`
writes that reconstruction as the checkpoint's sampling (EMA) weights.
"""

from pathlib import Path

import numpy as np
import torch
from torch import nn

from latentdiff.checkpoints.io import read_metadata, read_tensors, require_kind, save_checkpoint
from latentdiff.checkpoints.models import (LATENT_DIFFUSION, export_latent_diffusion,
                                           network_parts)
from latentdiff.config import PostHocEMAConfig
from latentdiff.errors import UserError
from latentdiff.train.ema import PowerEMA, sigma_rel_to_gamma

SNAPSHOTS = "phema"


class PostHocEMA:
    """The two power EMAs of a training run and their snapshots; `parts` are the checkpoint
    prefixes ("unet_phema0", …) that let a resumed run continue them exactly."""

    def __init__(self, network: nn.Module, cfg: PostHocEMAConfig, run_dir: Path):
        self.cfg, self.folder = cfg, run_dir / SNAPSHOTS
        self.emas = [PowerEMA(network, s) for s in cfg.sigma_rels]

    def continue_at(self, step: int, device: torch.device) -> None:
        """Both EMAs on `device`, counting `step` updates so far (a resumed run's start)."""
        for ema in self.emas:
            ema.num_updates = step
            ema.model.to(device)

    def update(self, network: nn.Module) -> None:
        for ema in self.emas:
            ema.update(network)

    def parts(self) -> dict[str, nn.Module]:
        return {k: m for i, ema in enumerate(self.emas)
                for k, m in network_parts(ema.model, f"_phema{i}").items()}

    def snapshot(self, step: int) -> Path:
        """Both EMAs after `step` updates, written atomically as step-NNNNNNN.safetensors with
        tensors "<i>.<prefix>.<name>" (i = 0, 1)."""
        tensors = {f"{i}.{prefix}.{k}": v for i, ema in enumerate(self.emas)
                   for prefix, part in network_parts(ema.model, "").items()
                   for k, v in part.state_dict().items()}
        path = self.folder / f"step-{step:07d}.safetensors"
        self.folder.mkdir(parents=True, exist_ok=True)
        save_checkpoint(path, tensors, {"step": step, "sigma_rels": list(self.cfg.sigma_rels)})
        return path


def profile_products(t_a: np.ndarray, g_a: np.ndarray, t_b: np.ndarray,
                     g_b: np.ndarray) -> np.ndarray:
    """⟨p_a, p_b⟩ (len(a), len(b)) of power profiles (t, γ), computed in log space (t^(γ+1)
    overflows for long runs and narrow profiles)."""
    t_a, g_a, t_b, g_b = (np.asarray(v, dtype=np.float64) for v in (t_a, g_a, t_b, g_b))
    ta, ga, tb, gb = t_a[:, None], g_a[:, None], t_b[None, :], g_b[None, :]
    m = np.minimum(ta, tb)
    log = ((ga + gb + 1) * np.log(m) - (ga + 1) * np.log(ta) - (gb + 1) * np.log(tb)
           + np.log(ga + 1) + np.log(gb + 1) - np.log(ga + gb + 1))
    return np.exp(log)


def solve_coefficients(steps: np.ndarray, gammas: np.ndarray, step: int,
                       gamma: float) -> np.ndarray:
    """x minimising ‖Σ_i x_i·p_i − p*‖ over the snapshots' profiles (steps t_i, exponents γ_i) for
    the target profile (step, γ); (n,) float64. Least squares on the normal equations, which are
    near-singular when snapshots are dense."""
    gram = profile_products(steps, gammas, steps, gammas)
    target = profile_products(steps, gammas, [step], [gamma])[:, 0]
    return np.linalg.lstsq(gram, target, rcond=1e-12)[0]


def snapshot_files(run_dir: Path, until: int) -> list[tuple[dict, Path]]:
    """(metadata, path) of the snapshots saved up to step `until`, in step order."""
    found = [(read_metadata(p), p) for p in sorted((run_dir / SNAPSHOTS).glob("step-*.safetensors"))]
    return [(m, p) for m, p in found if int(m["step"]) <= until]


def reconstruct(run_dir: Path, sigma_rel: float, step: int) -> tuple[dict[str, torch.Tensor], dict]:
    """The EMA of width σ_rel at `step` from the run's snapshots: {"<prefix>.<name>": tensor}
    (prefixes unet, conditioner) and what was used."""
    if not 0 < sigma_rel < 0.28:
        raise UserError(f"--sigma-rel {sigma_rel} must be in (0, 0.28) (0.28: the plain average)")
    snapshots = snapshot_files(run_dir, step)
    if not snapshots:
        raise UserError(f"{run_dir / SNAPSHOTS} holds no post-hoc EMA snapshots up to step {step}; "
                        "train with posthoc_ema.snapshot_every > 0")
    sigma_rels = snapshots[0][0]["sigma_rels"]
    steps = np.array([int(m["step"]) for m, _ in snapshots for _ in sigma_rels], dtype=np.float64)
    gammas = np.array([sigma_rel_to_gamma(r) for _ in snapshots for r in sigma_rels])
    x = solve_coefficients(steps, gammas, step, sigma_rel_to_gamma(sigma_rel))
    weights: dict[str, torch.Tensor] = {}
    for j, (_, path) in enumerate(snapshots):
        for name, v in read_tensors(path).items():  # "<i>.<prefix>.<name>": EMA i of snapshot j
            index, key = name.split(".", 1)
            if v.is_floating_point():
                coefficient = float(x[j * len(sigma_rels) + int(index)])
                weights[key] = weights.get(key, 0) + coefficient * v.double()
            else:  # integer buffers: the latest
                weights[key] = v
    info = {"sigma_rel": sigma_rel, "step": step, "snapshots": len(snapshots),
            "stored_sigma_rels": sigma_rels, "coefficients": [round(float(c), 6) for c in x]}
    return weights, info


def write_posthoc_checkpoint(checkpoint: Path, sigma_rel: float, out: Path) -> Path:
    """A sampling-only copy of a `latentdiff train` checkpoint (as `latentdiff export`, fp32) whose
    EMA weights (unet_ema, conditioner_ema) are the post-hoc EMA of width σ_rel at the checkpoint's
    step."""
    metadata = require_kind(checkpoint, LATENT_DIFFUSION,
                            "`latentdiff ema` needs a checkpoint written by `latentdiff train`")
    weights, info = reconstruct(checkpoint.parent.parent, sigma_rel,
                                int(metadata["train_state"]["step"]))
    ema = {}
    for key, v in weights.items():
        prefix, name = key.split(".", 1)
        ema[f"{prefix}_ema.{name}"] = v.float() if v.is_floating_point() else v
    return export_latent_diffusion(checkpoint, out, "fp32", ema, {"posthoc_ema": info})
