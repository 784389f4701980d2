"""What both training stages share: the Fabric engine, the run folder, randomness per step, the optimiser step,
logging and checkpoints.

Engine: Lightning Fabric. It gives DDP/FSDP across GPUs and nodes, mixed precision and launching (including 2+
processes on CPU with gloo) while the loop stays ours and reads top to bottom (docs/architecture.md says why).
"""

import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from lightning_fabric import Fabric
from torch import nn

from latentdiff.checkpoints.io import (KIND, flatten_optimizer, load_weights, prefixed, read_metadata, read_tensors,
                                       save_checkpoint, unflatten_optimizer)
from latentdiff.config import TrainConfig, to_yaml
from latentdiff.errors import UserError

log = logging.getLogger(__name__)


def make_fabric(cfg: TrainConfig) -> Fabric:
    """Fabric for the configured hardware; precision "auto" = bf16-mixed on GPUs with bf16, else full fp32."""
    precision = cfg.precision
    if precision == "auto":
        gpu = cfg.accelerator in ("auto", "cuda", "gpu") and torch.cuda.is_available()
        bf16 = gpu and torch.cuda.is_bf16_supported()
        precision = "bf16-mixed" if bf16 else "32-true"
    try:
        return Fabric(accelerator=cfg.accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes,
                      strategy=cfg.strategy, precision=precision)
    except (ValueError, RuntimeError, TypeError) as e:
        raise UserError(f"train.accelerator/devices/strategy/precision: {str(e).splitlines()[0]}") from None


def seeded(seed: int, build):
    """build() under a fixed torch seed, without touching the global RNG state: identical initial weights in every
    process and in every run with the same seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def step_generator(seed: int, step: int) -> torch.Generator:
    """The CPU generator of one training step: all randomness of step k is a function of (seed, k) alone."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) % 2 ** 63)


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up over `warmup_steps`, then constant."""
    return cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.adam_betas, weight_decay=cfg.weight_decay)


def optimizer_step(fabric: Fabric, model: nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor,
                   cfg: TrainConfig, step: int) -> None:
    """Backward (gradients averaged across processes), clip the global norm, AdamW step at the scheduled LR."""
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(cfg, step)
    optimizer.zero_grad(set_to_none=True)
    fabric.backward(loss)
    if cfg.grad_clip > 0:
        fabric.clip_gradients(model, optimizer, max_norm=cfg.grad_clip)
    optimizer.step()


@dataclass
class Run:
    """A run folder: checkpoints/last.safetensors (+ step-NNNNNNN.safetensors when `keep_checkpoints`),
    samples/*.png, metrics.jsonl (time_s: seconds since the training loop started in this process), config.yaml."""

    root: Path
    fabric: Fabric
    keep_checkpoints: bool = False
    started: float = field(default_factory=time.perf_counter)

    def start_clock(self) -> None:
        """Called when the training loop starts: time_s and the time budget count from here (data loading and
        latent caching before it are excluded)."""
        self.started = time.perf_counter()

    def out_of_time(self, max_minutes: float) -> bool:
        """Whether the training loop has used its budget (0: none), agreed across processes."""
        if max_minutes <= 0:
            return False
        over = float(time.perf_counter() - self.started >= 60.0 * max_minutes)
        return bool(self.fabric.all_reduce(torch.tensor(over), reduce_op="max") > 0)

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoints" / "last.safetensors"

    def sample_path(self, step: int) -> Path:
        return self.root / "samples" / f"step-{step:07d}.png"

    def start(self, config, resume: bool) -> dict | None:
        """Metadata of the checkpoint to resume from (None for a fresh run); refuses to overwrite a run."""
        if self.checkpoint.exists() and not resume:
            raise UserError(f"{self.root} already holds a run; pass --resume to continue it or choose another "
                            f"train.out_dir")
        if self.fabric.is_global_zero:
            self.root.mkdir(parents=True, exist_ok=True)
            (self.root / "config.yaml").write_text(to_yaml(config))
        return read_metadata(self.checkpoint) if resume and self.checkpoint.exists() else None

    def log(self, step: int, **values: float) -> None:
        if self.fabric.is_global_zero:
            record = {"step": step, "time_s": round(time.perf_counter() - self.started, 2), **values}
            with open(self.root / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    def save(self, tensors: dict[str, torch.Tensor], optimizers: dict[str, torch.optim.Optimizer],
             metadata: dict) -> None:
        """Rank 0 writes the checkpoint (atomically) with the optimiser states ({prefix: optimiser}, e.g.
        {"optimizer": ...}); all ranks wait for it."""
        if self.fabric.is_global_zero:
            tensors, metadata = dict(tensors), dict(metadata)
            for prefix, optimizer in optimizers.items():
                opt_tensors, metadata[prefix] = flatten_optimizer(optimizer.state_dict())
                tensors.update(prefixed(f"{prefix}.", opt_tensors))
            save_checkpoint(self.checkpoint, tensors, metadata)
            if self.keep_checkpoints:
                self._keep(int(metadata["train_state"]["step"]))
        self.fabric.barrier()

    def _keep(self, step: int) -> None:
        """A step-numbered copy of last.safetensors (a hard link where the file system allows)."""
        kept = self.checkpoint.with_name(f"step-{step:07d}.safetensors")
        kept.unlink(missing_ok=True)
        try:
            os.link(self.checkpoint, kept)
        except OSError:
            shutil.copyfile(self.checkpoint, kept)


def resume_state(path: Path, metadata: dict, kind: str, modules: dict[str, nn.Module],
                 optimizers: dict[str, torch.optim.Optimizer]) -> int:
    """Load module weights ({prefix: module}) and optimiser states ({prefix: optimiser}) from a checkpoint; returns
    the next step."""
    if metadata.get(KIND) != kind:
        raise UserError(f"{path} is not a {kind} run; choose another train.out_dir")
    for prefix, module in modules.items():
        load_weights(module, read_tensors(path, f"{prefix}."), str(path))
    for prefix, optimizer in optimizers.items():
        optimizer.load_state_dict(unflatten_optimizer(read_tensors(path, f"{prefix}."), metadata[prefix]))
    return int(metadata["train_state"]["step"])


def check_same(stored: dict, current: dict, what: str, path: Path) -> None:
    if stored != current:
        changed = sorted(k for k in current if stored.get(k) != current.get(k))
        raise UserError(f"cannot resume {path}: {what} changed ({', '.join(changed)}); restore it or use a new "
                        f"train.out_dir")


def due(done: int, every: int, last: bool) -> bool:
    """Whether a periodic action (log, sample, checkpoint every `every` steps; 0 = only at the end) runs after step
    `done`; `last`: the loop ends after this step (max_steps or the time budget reached)."""
    return (every > 0 and done % every == 0) or last


def check_finite(loss: torch.Tensor, step: int) -> None:
    if not math.isfinite(loss.item()):
        raise UserError(f"the loss became {loss.item()} at step {step}; lower train.lr or raise train.warmup_steps, "
                        f"then --resume")


def interrupted(step: int) -> UserError:
    return UserError(f"interrupted at step {step}; checkpoint saved, continue with --resume")


def mean_over_processes(fabric: Fabric, value: torch.Tensor) -> float:
    return float(fabric.all_reduce(value.detach().float(), reduce_op="mean"))


def train_state(step: int, fabric: Fabric, **extra) -> dict:
    return {"train_state": {"step": step, "world_size": fabric.world_size, **extra}}
