"""Typed configuration of few-step distillation (re-exported by `config`): `latentdiff distill
METHOD TEACHER`."""

from dataclasses import dataclass, field

from latentdiff.config_files import check as _check
from latentdiff.config_train import DataConfig, TrainConfig


def _train_defaults() -> TrainConfig:
    """Distillation's loop defaults: its own run folder, a smaller batch and learning rate."""
    return TrainConfig(out_dir="runs/distill", max_steps=2000, batch_size=32, lr=1e-4,
                       sample_every=500, checkpoint_every=250, log_every=25)


@dataclass(frozen=True)
class LoRAConfig:
    """Low-rank adapters (α/r)·B·A on every Linear and Conv2d under the module-name `prefixes` of a
    UNet (`nn/lora.py`); what an adapter student's checkpoint stores to rebuild it."""

    rank: int = 16
    alpha: float = 16.0
    prefixes: tuple[str, ...] = ("input_blocks", "middle_block", "output_blocks")

    def __post_init__(self):
        _check(self.rank >= 1 and self.alpha > 0, "lora: rank must be ≥ 1 and alpha > 0")


@dataclass(frozen=True)
class DistillConfig:
    """A consistency student distilled from a trained teacher (docs/few-step.md).

    The student starts as a copy of the teacher's UNet (plus a zero-initialised guidance embedding
    when the teacher has an unconditional mode) and shares its autoencoder and frozen conditioner.
    `num_intervals` N: the teacher's ODE is solved between the N skipping-step levels of the lcm
    grid (timesteps k·i − 1, k = T // N) and timestep 0; guidance scales s ~ U[guidance_min,
    guidance_max] (LCM: 3 … 15 on SD's w + 1; only for teachers trained with condition dropout);
    `guidance_scale`: the student's default at sampling. `huber_c`: the pseudo-Huber metric's c
    (null: squared error). `target_decay`: θ⁻ = EMA of θ (LCM: 0.95; 0: the online weights, as
    iCT). `ema_decay`: the sampling EMA (`unet_ema`). `steps`: the student's default sampling steps
    (and its previews). data: null = the teacher's training data (its checkpoint's config).
    progressive and guided: `halvings` H stages each halve a DDIM student's steps, from
    `num_intervals` N (trailing spacing) to N/2^H; guided starts with one more stage that distils
    the guided teacher into an N-step student taking s as an input; each stage is
    train.max_steps / stages steps. ect: the pair's gap halves at each of `ct_stages` stages
    of the run (Geng et al. 2025). lora_rank r, lora_alpha α (null: r) for the method lcd-lora:
    the student is the teacher plus low-rank adapters (α/r)·B·A on every Linear and Conv2d of the
    UNet's blocks (`nn/lora.py`), and its checkpoint holds only those and the guidance embedding
    (LCM-LoRA, Luo et al. 2023).
    """

    teacher: str = "???"
    num_intervals: int = 50
    guidance_min: float = 1.0
    guidance_max: float = 1.0
    guidance_scale: float = 1.0
    huber_c: float | None = 0.001
    target_decay: float = 0.95
    ema_decay: float = 0.999
    boundary_width: float = 1e-3
    steps: int = 4
    halvings: int = 4
    ct_stages: int = 8
    lora_rank: int = 16
    lora_alpha: float | None = None
    data: DataConfig | None = None
    train: TrainConfig = field(default_factory=_train_defaults)

    def __post_init__(self):
        _check(2 <= self.num_intervals, "num_intervals must be ≥ 2")
        _check(0 <= self.guidance_min <= self.guidance_scale <= self.guidance_max,
               f"guidance_min={self.guidance_min:g} ≤ guidance_scale={self.guidance_scale:g} ≤ "
               f"guidance_max={self.guidance_max:g} must hold (all ≥ 0); e.g. guidance_min=1 "
               "guidance_scale=3 guidance_max=6")
        _check(self.huber_c is None or self.huber_c >= 0, "huber_c must be ≥ 0 (or null)")
        _check(0 <= self.target_decay < 1 and 0 <= self.ema_decay <= 1,
               "target_decay must be in [0, 1) and ema_decay in [0, 1]")
        _check(self.halvings >= 1 and self.ct_stages >= 1, "halvings and ct_stages must be ≥ 1")
        _check(self.lora_rank >= 1 and (self.lora_alpha is None or self.lora_alpha > 0),
               "lora_rank must be ≥ 1 and lora_alpha > 0 (or null: the rank)")
        _check(1 <= self.steps <= self.num_intervals,
               f"steps={self.steps} must be in 1 … num_intervals={self.num_intervals}")


@dataclass(frozen=True)
class TeacherConfig:
    """Spectrum-aware distillation (Yang et al. 2023, Sec. 4.2) of a `latentdiff train` run's network
    from a trained `teacher` on the same first stage and noise schedule: besides the data loss,
    `weight` · mean_(u,v) w(u,v)·|FFT(F_s − F_t)(u, v)|² between the student's and the teacher's
    network outputs at the same noisy latent, w = |FFT(x̂₀ of the teacher)|^(−alpha) normalised to
    mean 1 per sample. The inverse magnitude weight lifts the high frequencies a slim network
    neglects; alpha 0 is plain output distillation (by Parseval, the spatial MSE)."""

    teacher: str | None = None
    weight: float = 1.0
    alpha: float = 1.0

    def __post_init__(self):
        _check(self.weight >= 0 and self.alpha >= 0,
               "distillation.weight and distillation.alpha must be ≥ 0")
