"""Typed configuration of the diffusion process and its training loss (re-exported by `config`):
the noise schedule, what the network predicts, how training draws and weights σ, post-hoc EMA."""

from dataclasses import dataclass, field

from latentdiff.config_files import check as _check


@dataclass(frozen=True)
class NoiseScheduleConfig:
    """The noise levels of the forward process q(z_t|z_0) (paper Sec. 3.2) as a table of T levels.

    kind: β schedules "linear" (β linear, DDPM), "scaled_linear" (√β linear: what the CompVis
    configs call "linear", LDM and Stable Diffusion), "cosine" (Nichol & Dhariwal 2021;
    beta_start/beta_end unused); σ tables of continuous-time models "karras" (σ_min … σ_max spaced
    as Karras et al. 2022, Eq. 5, with ρ; EDM) and "flow" (rectified flow, t = 1/T … 1,
    σ = t/(1 − t); Esser et al. 2024). zero_terminal_snr rescales √ᾱ so that the last step is pure
    noise (Lin et al. 2024, Alg. 1); use it with prediction v and the trailing spacing. shift α
    multiplies every σ (the resolution-dependent shift of Esser et al. 2024, Eq. 23: α =
    √(pixels / pixels of the resolution the schedule was made for); 1 = none).
    """

    kind: str = "scaled_linear"
    num_timesteps: int = 1000
    beta_start: float = 0.0015
    beta_end: float = 0.0195
    zero_terminal_snr: bool = False
    sigma_min: float = 0.002  # karras
    sigma_max: float = 80.0  # karras
    rho: float = 7.0  # karras
    shift: float = 1.0

    def __post_init__(self):
        _check(self.kind in SCHEDULE_KINDS,
               f"schedule.kind={self.kind!r} is unknown; use {', '.join(SCHEDULE_KINDS)}")
        _check(self.num_timesteps >= 2, "schedule.num_timesteps must be at least 2")
        _check(0 < self.sigma_min < self.sigma_max and self.rho > 0 and self.shift > 0,
               "schedule: need 0 < sigma_min < sigma_max, rho > 0 and shift > 0")
        _check(not (self.zero_terminal_snr and self.kind in ("karras", "flow")),
               f"schedule.zero_terminal_snr rescales a β schedule, not kind={self.kind} (a flow "
               "schedule ends in pure noise already); remove it")


SCHEDULE_KINDS = ("linear", "scaled_linear", "cosine", "karras", "flow")


@dataclass(frozen=True)
class DiffusionConfig:
    """The diffusion model on latents: its noise schedule and what the network predicts.

    prediction: "eps", "x0", "v" (discrete-time VP networks: the paper's, and Salimans & Ho 2022),
    "edm" (Karras et al. 2022's preconditioning for data of std sigma_data) or "flow" (the
    rectified flow's velocity ε − z_0; Liu et al. 2023, Esser et al. 2024). sigma_data: the std of
    the latents, 1 after the scale factor s = 1/std(z) (0.5 for EDM's pixels in [-1, 1]).
    """

    schedule: NoiseScheduleConfig = field(default_factory=NoiseScheduleConfig)
    prediction: str = "eps"
    sigma_data: float = 1.0

    def __post_init__(self):
        _check(self.prediction in PREDICTIONS,
               f"diffusion.prediction={self.prediction!r} is unknown; use "
               f"{', '.join(PREDICTIONS)}")
        _check(self.sigma_data > 0, "diffusion.sigma_data must be > 0")


PREDICTIONS = ("eps", "x0", "v", "edm", "flow")


@dataclass(frozen=True)
class StudentConfig:
    """What a distilled student is and how it samples when the caller says nothing
    (docs/few-step.md).

    consistency: a consistency model f(x, σ) (Song et al. 2023, Sec. 3 and App. C) on the network's
    denoiser D: f = c_skip(σ)·x + c_out(σ)·D(x; σ) with c_skip = b²/(Δ² + b²), c_out = Δ/√(Δ² + b²),
    Δ = σ − σ_min, so that f(x, σ_min) = x exactly and f ≈ D once Δ ≫ b (`boundary_width` b; LCM's
    boundary is 0.05 timesteps wide, Luo et al. 2023); false: a plain denoiser (a progressive or
    guided-distillation student). Sampling defaults: `sampler` for `steps` steps on `spacing` (lcm:
    `steps` of the `original_steps` skipping-step timesteps it was distilled on), with the guidance
    scale `guidance_scale`; a student that embeds the scale takes any in [guidance_min,
    guidance_max] in one network evaluation per step.
    """

    consistency: bool = True
    sigma_min: float = 0.002
    boundary_width: float = 1e-3
    sampler: str = "consistency"
    steps: int = 4
    spacing: str = "lcm"
    original_steps: int = 50
    guidance_scale: float = 1.0
    guidance_min: float = 1.0
    guidance_max: float = 1.0

    def __post_init__(self):
        _check(self.sigma_min >= 0 and self.boundary_width > 0,
               "student: sigma_min must be ≥ 0 and boundary_width > 0")
        _check(1 <= self.steps <= self.original_steps,
               f"student: steps={self.steps} must be in 1 … original_steps={self.original_steps}")
        _check(0 <= self.guidance_min <= self.guidance_scale <= self.guidance_max,
               "student: need 0 ≤ guidance_min ≤ guidance_scale ≤ guidance_max")


SIGMA_SAMPLERS = ("uniform", "lognormal", "logit_normal")
WEIGHTINGS = ("uniform", "min_snr", "soft_min_snr", "edm")


@dataclass(frozen=True)
class ObjectiveConfig:
    """The training loss E_σ λ(σ)·‖D(z_0 + σ·n; σ) − z_0‖² (Karras et al. 2022, Eq. 2): how σ is
    drawn and weighted (docs/training.md says when to use which).

    sigma_sampler: "uniform" (t ~ U{1..T} of the schedule, the paper's), "lognormal"
    (ln σ ~ N(mean, std²), EDM; default mean −0.4 + ln(σ_d/0.5), std 1.0: EDM2's latent setting for
    this sigma_data) or "logit_normal" (logit t ~ N(mean, std²) of a flow's t, default (0, 1):
    SD3; as σ = t/(1 − t), this is ln σ ~ N(mean, std²)). Both continuous samplers are multiplied
    by the schedule's shift. weighting λ(σ): "uniform" (1/c_out²: the plain MSE of the network's
    own output, ε, x0, v or F), "min_snr" (min(SNR, γ) with SNR = 1/σ²; Hang et al. 2023 for every
    target), "soft_min_snr" (1/(σ² + 1/γ); Crowson et al. 2024), "edm" ((σ² + σ_d²)/(σ·σ_d)²).
    learned_weighting divides the loss by e^u(σ) and adds u(σ), u a small learned function of σ
    (Karras et al. 2024, Eq. 22), on top of λ.
    """

    sigma_sampler: str = "uniform"
    mean: float | None = None
    std: float | None = None
    weighting: str = "uniform"
    gamma: float = 5.0
    learned_weighting: bool = False

    def __post_init__(self):
        _check(self.sigma_sampler in SIGMA_SAMPLERS,
               f"objective.sigma_sampler={self.sigma_sampler!r} is unknown; use "
               f"{', '.join(SIGMA_SAMPLERS)}")
        _check(self.weighting in WEIGHTINGS,
               f"objective.weighting={self.weighting!r} is unknown; use {', '.join(WEIGHTINGS)}")
        _check(self.gamma > 0 and (self.std is None or self.std > 0),
               "objective.gamma and objective.std must be > 0")


@dataclass(frozen=True)
class PostHocEMAConfig:
    """Post-hoc EMA (Karras et al. 2024, Sec. 3): two power-function EMAs of the weights with
    relative widths `sigma_rels`, saved every `snapshot_every` steps (0: off) under the run's
    phema/; `latentdiff ema` then reconstructs the EMA of any other width from them."""

    snapshot_every: int = 0
    sigma_rels: tuple[float, float] = (0.05, 0.10)

    def __post_init__(self):
        _check(self.snapshot_every >= 0, "posthoc_ema.snapshot_every must be ≥ 0")
        _check(len(self.sigma_rels) == 2 and all(0 < s < 0.28 for s in self.sigma_rels)
               and self.sigma_rels[0] != self.sigma_rels[1],
               "posthoc_ema.sigma_rels must be two different values in (0, 0.28)")


@dataclass(frozen=True)
class MaskReplaceConfig:
    """VQ-Diffusion's mask-and-replace forward process over a VQ autoencoder's codes (Gu et al. 2022,
    Sec. 3.2; `discrete_noise.py`): T steps; the cumulative mask probability γ̄_t rises linearly
    from 0 to `gamma_bar_end` and the probability ᾱ_t that a code is untouched falls linearly from
    1 to `alpha_bar_end` (the paper's 0.9 and 9e-6 at T = 100); the rest is spread uniformly
    over the codes (β̄_t = (1 − ᾱ_t − γ̄_t)/K)."""

    num_timesteps: int = 100
    alpha_bar_end: float = 9e-6
    gamma_bar_end: float = 0.9

    def __post_init__(self):
        _check(self.num_timesteps >= 1, "mask_replace.num_timesteps must be ≥ 1")
        _check(0 < self.alpha_bar_end < 1 and 0 <= self.gamma_bar_end < 1
               and self.alpha_bar_end + self.gamma_bar_end <= 1,
               "mask_replace: need 0 < alpha_bar_end < 1, 0 ≤ gamma_bar_end < 1 and their sum ≤ 1")


@dataclass(frozen=True)
class CoarseToFineConfig:
    """Frido's coarse-to-fine denoising (Fan et al., AAAI 2023, Sec. 3.2; `coarse_to_fine.py`) on
    an autoencoder with a feature pyramid of L > 1 levels (`model.pyramid_levels`): one network
    denoises one level per stage, the coarsest first, conditioned on the levels made before it,
    which it sees mixed with noise, (1 − noise_mix)·z_ℓ + noise_mix·n (Frido's 0.1). The network
    takes in_channels = c/L + c + L (the stage's state, the coarser levels, a one-hot stage map)
    and gives out_channels = c/L; sampling costs L × steps network evaluations."""

    enabled: bool = False
    noise_mix: float = 0.1

    def __post_init__(self):
        _check(0 <= self.noise_mix < 1, "coarse_to_fine.noise_mix must be in [0, 1)")
