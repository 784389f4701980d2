"""What both training stages share: the Fabric engine, the run folder, randomness per step, the
optimiser step, logging and checkpoints.

Engine: Lightning Fabric. It gives DDP across GPUs and nodes, mixed precision and launching
(including 2+ processes on CPU with gloo) while the loop stays ours and reads top to bottom
(docs/architecture.md says why).
"""

import fcntl
import json
import logging
import math
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from lightning_fabric import Fabric
from torch import nn

from latentdiff.checkpoints.io import (KIND, flatten_optimizer, load_weights, prefixed,
                                       read_metadata, read_tensors,
                                       save_checkpoint, unflatten_optimizer)
from latentdiff.config import TrainConfig, to_yaml
from latentdiff.errors import Interrupted, UserError
from latentdiff.files import check_output, remove_stale_temporaries, temporary_name, write_text
from latentdiff.progress import progress

log = logging.getLogger(__name__)
# of the time budget and the log; tests replace it with one that ignores speed
clock = time.perf_counter
_HELD_LOCKS: dict[Path, object] = {}  # run folder → its open, locked .lock file


def make_fabric(cfg: TrainConfig) -> Fabric:
    """Fabric for the configured hardware; precision "auto" = bf16-mixed on GPUs with bf16, else
    full fp32."""
    precision = cfg.precision
    if precision == "auto":
        gpu = cfg.accelerator in ("auto", "cuda", "gpu") and torch.cuda.is_available()
        bf16 = gpu and torch.cuda.is_bf16_supported()
        precision = "bf16-mixed" if bf16 else "32-true"
    try:
        return Fabric(accelerator=cfg.accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes,
                      strategy=cfg.strategy, precision=precision)
    except (ValueError, RuntimeError, TypeError) as e:
        raise UserError("train.accelerator/devices/strategy/precision: "
                        f"{str(e).splitlines()[0]}") from None


def seeded(seed: int, build):
    """build() under a fixed torch seed, without touching the global RNG state: identical initial
    weights in every process and in every run with the same seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def step_generator(seed: int, step: int) -> torch.Generator:
    """The CPU generator of one training step: all randomness of step k is a function of (seed, k)
    alone."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) % 2 ** 63)


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up over `warmup_steps`, then constant."""
    return cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; with train.fused_optimizer its fused kernel (one kernel for all parameters) instead of
    the multi-tensor one."""
    return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.adam_betas, weight_decay=cfg.weight_decay,
                             fused=cfg.fused_optimizer or None)


@dataclass(frozen=True)
class MicroBatches:
    """A step's loss over this process's `rows` rows, computed in `parts` micro-batches (gradient
    accumulation): loss_on(rows slice) → the mean loss over those rows."""

    loss_on: Callable[[slice], torch.Tensor]
    rows: int
    parts: int = 1

    def backward(self, fabric: Fabric, model: nn.Module) -> torch.Tensor:
        """Backward of the mean over all rows, one micro-batch at a time (each weighted by its share
        of the rows; gradients synchronised across processes only with the last); returns that mean,
        detached."""
        bounds = [round(i * self.rows / self.parts) for i in range(self.parts + 1)]
        total = torch.zeros(())
        for i, (begin, end) in enumerate(zip(bounds, bounds[1:])):
            with fabric.no_backward_sync(model, enabled=i < self.parts - 1):
                loss = self.loss_on(slice(begin, end)) * ((end - begin) / self.rows)
                fabric.backward(loss)
            total = total.to(loss.device) + loss.detach()
        return total


def optimizer_step(fabric: Fabric, model: nn.Module,
                   optimizer: torch.optim.Optimizer, loss: torch.Tensor | MicroBatches,
                   cfg: TrainConfig, step: int) -> torch.Tensor:
    """Backward (gradients averaged across processes; in micro-batches for `MicroBatches`), a
    one-line error for a non-finite loss, clip the global norm, AdamW step at the scheduled LR.
    Returns the loss (detached)."""
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(cfg, step)
    optimizer.zero_grad(set_to_none=True)
    if isinstance(loss, MicroBatches):
        loss = loss.backward(fabric, model)
        check_finite(loss, step)
    else:
        check_finite(loss, step)
        fabric.backward(loss)
        loss = loss.detach()
    if cfg.grad_clip > 0:
        fabric.clip_gradients(model, optimizer, max_norm=cfg.grad_clip)
    optimizer.step()
    return loss


class StopSignals:
    """SIGINT (Ctrl-C) and SIGTERM while training: the first asks the loop to stop after the step in
    progress, which then saves the state after exactly that step; a second one stops at once (the
    last checkpoint stays intact). Installed only in the main thread (signal handlers live there);
    `received` is the first signal's number."""

    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame) -> None:
        if self.received is not None:
            raise Interrupted("stopped at once by a second signal; the last checkpoint is intact: "
                              "continue with --resume", 128 + signum)
        self.received = signum
        message = (f"\nlatentdiff: {signal.Signals(signum).name}: finishing this step and saving a "
                   f"checkpoint (send it again to stop at once)\n")
        # unbuffered: the signal may land inside a write to stderr, which a print here would
        # re-enter
        try:
            os.write(sys.stderr.fileno(), message.encode())
        # a stream without a descriptor (captured output)
        except (AttributeError, OSError, ValueError):
            print(message, end="", file=sys.stderr)

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                # e.g. SIGINT of a background job: left ignored
                if signal.getsignal(signum) is not signal.SIG_IGN:
                    self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


@dataclass
class Run:
    """A run folder: checkpoints/last.safetensors (+ step-NNNNNNN.safetensors when
    `keep_checkpoints`), samples/*.png, metrics.jsonl (time_s: seconds since the training loop
    started in this process), config.yaml.

    Nothing is created until `open` (after every check of the config and data has passed); rank 0
    then holds an exclusive lock on `.lock` in the folder, so that two processes never train into
    the same run."""

    root: Path
    fabric: Fabric
    keep_checkpoints: bool = False
    started: float = field(default_factory=lambda: clock())
    signals: StopSignals = field(default_factory=StopSignals)
    _lock: object = None

    def start_clock(self) -> None:
        """Called when the training loop starts: time_s and the time budget count from here (data
        loading and latent caching before it are excluded)."""
        self.started = clock()

    def should_stop(self, max_minutes: float) -> tuple[bool, bool]:
        """(out of time, stop signal received), agreed across processes: the training loop has used
        its budget (max_minutes > 0), or any process was asked to stop."""
        over = max_minutes > 0 and clock() - self.started >= 60.0 * max_minutes
        flags = torch.tensor([float(over), float(self.signals.received is not None)])
        if self.fabric.world_size > 1:
            flags = self.fabric.all_reduce(flags, reduce_op="max").cpu()
        return bool(flags[0] > 0), bool(flags[1] > 0)

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoints" / "last.safetensors"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    def sample_path(self, step: int) -> Path:
        return self.root / "samples" / f"step-{step:07d}.png"

    def start(self, resume: bool) -> dict | None:
        """Metadata of the checkpoint to resume from (None for a fresh run), after checking that the
        folder can be written; refuses to overwrite a run. Creates nothing."""
        check_output(self.root, "train.out_dir", kind="folder")
        if self.checkpoint.exists() and not resume:
            raise UserError(f"{self.root} already holds a run; pass --resume to continue it or "
                            f"choose another train.out_dir")
        if self.root.is_dir() and self.fabric.is_global_zero:
            self._acquire()
        return read_metadata(self.checkpoint) if resume and self.checkpoint.exists() else None

    def open(self, config, step: int) -> None:
        """Create the folder (rank 0; locked), remove temporaries a killed run left, write
        config.yaml, and cut metrics.jsonl to the steps ≤ `step` that the run continues from (each
        step is then logged once)."""
        if self.fabric.is_global_zero:
            self.root.mkdir(parents=True, exist_ok=True)
            self._acquire()
            for folder in (self.root, self.checkpoint.parent, self.sample_path(0).parent):
                if folder.is_dir():
                    remove_stale_temporaries(folder, everything=True)
            write_text(self.root / "config.yaml", to_yaml(config))
            if self.metrics.exists():
                write_text(self.metrics,
                           "".join(line + "\n" for line in _logged_until(self.metrics, step)))
        self.fabric.barrier()

    def _acquire(self) -> None:
        """The run folder's lock, held until the process ends (reused by later runs of this process
        in it)."""
        key = self.root.resolve()
        if key in _HELD_LOCKS:
            self._lock = _HELD_LOCKS[key]
        if self._lock is not None:
            return
        lock = open(self.root / ".lock", "a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if not isinstance(e, BlockingIOError):  # a file system without locks: train unlocked
                lock.close()
                return
            lock.seek(0)
            owner = lock.read().strip() or "?"
            lock.close()
            raise UserError(f"{self.root} is in use by another latentdiff process (pid {owner}); "
                            f"wait for it to end or choose another train.out_dir") from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        self._lock = _HELD_LOCKS[key] = lock

    def log(self, step: int, **values: float) -> None:
        """One JSON line appended to metrics.jsonl (a line torn by a crash is dropped when the run
        resumes)."""
        if self.fabric.is_global_zero:
            record = {"step": step, "time_s": round(clock() - self.started, 2), **values}
            try:
                with open(self.metrics, "a") as f:
                    f.write(json.dumps(record) + "\n")
            except OSError as e:
                raise UserError(f"cannot write {self.metrics}: {e.strerror or e}; the last "
                                "checkpoint is intact, free space and continue "
                                "with --resume") from None

    def save(self, tensors: dict[str, torch.Tensor], optimizers: dict[str, torch.optim.Optimizer],
             metadata: dict) -> None:
        """Rank 0 writes the checkpoint (atomically) with the optimiser states ({prefix: optimiser},
        e.g. {"optimizer": ...}); all ranks wait for it."""
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
        """A step-numbered copy of last.safetensors (a hard link where the file system allows), made
        atomically."""
        kept = self.checkpoint.with_name(f"step-{step:07d}.safetensors")
        tmp = temporary_name(kept)
        try:
            os.link(self.checkpoint, tmp)
        except OSError:
            shutil.copyfile(self.checkpoint, tmp)
        os.replace(tmp, kept)

    def interrupted(self, step: int) -> Interrupted:
        """What the loop raises after saving the state of `step` on a stop signal."""
        signum = self.signals.received or signal.SIGINT
        return Interrupted(f"{signal.Signals(signum).name} at step {step}: checkpoint saved to "
                           f"{self.checkpoint}; continue with --resume", 128 + signum)


def _logged_until(path: Path, step: int) -> list[str]:
    """The lines of a metrics log that record steps ≤ `step` (a torn last line of a killed run is
    dropped)."""
    kept = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
            kept.append(line)
    return kept


def resume_state(path: Path, metadata: dict, kind: str, modules: dict[str, nn.Module],
                 optimizers: dict[str, torch.optim.Optimizer]) -> int:
    """Load module weights ({prefix: module}) and optimiser states ({prefix: optimiser}) from a
    checkpoint; returns the next step."""
    if metadata.get(KIND) != kind:
        raise UserError(f"{path} is not a {kind} run; choose another train.out_dir")
    for prefix, module in modules.items():
        load_weights(module, read_tensors(path, f"{prefix}."), str(path))
    for prefix, optimizer in optimizers.items():
        optimizer.load_state_dict(unflatten_optimizer(read_tensors(path, f"{prefix}."),
                                                      metadata[prefix]))
    return int(metadata["train_state"]["step"])


def check_same(stored: dict, current: dict, what: str, path: Path) -> None:
    if stored != current:
        changed = sorted(k for k in current if stored.get(k) != current.get(k))
        raise UserError(f"cannot resume {path}: {what} changed ({', '.join(changed)}); restore it "
                        f"or use a new train.out_dir")


def due(done: int, every: int, last: bool) -> bool:
    """Whether a periodic action (log, sample, checkpoint every `every` steps; 0 = only at the end)
    runs after step `done`; `last`: the loop ends after this step (max_steps or the time budget
    reached)."""
    return (every > 0 and done % every == 0) or last


def training_progress(start: int, max_steps: int, what: str, fabric: Fabric):
    """The progress bar of steps start … max_steps (rank 0 only), advanced by `update()` after each
    step."""
    return progress(initial=start, total=max_steps, desc=what,
                    disable=not fabric.is_global_zero)


def check_finite(loss: torch.Tensor, step: int) -> None:
    if not math.isfinite(loss.item()):
        raise UserError(f"the loss became {loss.item()} at step {step}; lower train.lr or raise "
                        f"train.warmup_steps, then --resume")


def mean_over_processes(fabric: Fabric, value: torch.Tensor) -> float:
    return float(fabric.all_reduce(value.detach().float(), reduce_op="mean"))


def train_state(step: int, fabric: Fabric, **extra) -> dict:
    return {"train_state": {"step": step, "world_size": fabric.world_size, **extra}}


def training_loop(run: Run, fabric: Fabric, cfg: TrainConfig, start: int, what: str,
                  loss_of: Callable[[int], "torch.Tensor | MicroBatches"], model: nn.Module,
                  optimizer: torch.optim.Optimizer, after_step: Callable[[int], None],
                  save: Callable[[int], None], preview: Callable[[int], None],
                  periodic: Callable[[int, bool, bool], None] | None = None,
                  log_values: Callable[[], dict] | None = None) -> None:
    """Steps start … cfg.max_steps − 1 of a training run: loss_of(step) (a loss, or `MicroBatches`),
    the optimiser step, after_step(step) (EMA updates), then, after step `done`: the log (with
    log_values(), e.g. the data loader's wait), the preview grid (rank 0), periodic(done, last,
    stopping) (e.g. post-hoc EMA snapshots), the checkpoint; the time budget and stop signals end
    the loop after a saved step (a stop signal raises `Interrupted`)."""
    with run.signals, training_progress(start, cfg.max_steps, what, fabric) as progress:
        run.start_clock()
        for step in range(start, cfg.max_steps):
            loss = optimizer_step(fabric, model, optimizer, loss_of(step), cfg, step)
            after_step(step)
            done = step + 1
            progress.update()
            out_of_time, stopping = run.should_stop(cfg.max_minutes)
            last = done == cfg.max_steps or out_of_time
            if due(done, cfg.log_every, last or stopping):
                value = mean_over_processes(fabric, loss)
                run.log(done, loss=value, lr=optimizer.param_groups[0]["lr"],
                        **(log_values() if log_values else {}))
                progress.set_postfix(loss=f"{value:.4f}", refresh=False)
            if due(done, cfg.sample_every, last) and fabric.is_global_zero:
                preview(done)
            if periodic is not None:
                periodic(done, last, stopping)
            if due(done, cfg.checkpoint_every, last or stopping):
                save(done)
            if stopping and not last:
                raise run.interrupted(done)
            if last:
                break
