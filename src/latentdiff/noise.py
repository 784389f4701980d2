"""The forward process q(z_t | z_0) = N(√ᾱ_t z_0, (1 − ᾱ_t) I) of the paper's Sec. 3.2: β schedules
and their tables.

Pure tensor maths over one `NoiseSchedule`; no modules, loops or losses (the parameterisation is in
`preconditioning.py`). Besides the discrete ᾱ_t the schedule exposes the variance-exploding view
σ_t = √((1 − ᾱ_t)/ᾱ_t), in which x = z_t/√ᾱ_t = z_0 + σ_t·ε and all samplers work (k-diffusion's
convention). Continuous-time models have a table too, defined by σ rather than β (it sets their
sampling grids and σ range): "karras" spaces σ between σ_min and σ_max as Karras et al. 2022, Eq. 5
(EDM), "flow" takes the rectified flow's t = 1/T … 1 with σ = t/(1 − t) (x_t = (1 − t)·z_0 + t·ε is
x/(1 + σ)). A resolution shift α multiplies every σ (log-SNR − 2 ln α: Hoogeboom et al. 2023,
Esser et al. 2024 Eq. 23).
"""

import math

import torch

from latentdiff.config import NoiseScheduleConfig


def make_betas(cfg: NoiseScheduleConfig) -> torch.Tensor:
    """β_1..β_T (float64, shape (T,)) for a β kind (linear, scaled_linear, cosine)."""
    T = cfg.num_timesteps
    if cfg.kind == "linear":  # Ho et al. 2020
        return torch.linspace(cfg.beta_start, cfg.beta_end, T, dtype=torch.float64)
    # linear in √β: LDM / Stable Diffusion ("linear" in the CompVis configs)
    if cfg.kind == "scaled_linear":
        return torch.linspace(cfg.beta_start ** 0.5, cfg.beta_end ** 0.5, T, dtype=torch.float64) ** 2
    # cosine (Nichol & Dhariwal 2021, Eq. 17): ᾱ(t) = cos²(((t/T + s)/(1 + s))·π/2), β clipped at
    # 0.999
    s = 0.008
    steps = torch.arange(T + 1, dtype=torch.float64) / T
    alpha_bar = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)


# ᾱ_T of a zero-terminal-SNR schedule, instead of 0: σ_T ≈ 4.5e3 stays finite
TERMINAL_ALPHA_BAR = 4.9e-8
TERMINAL_SIGMA = ((1 - TERMINAL_ALPHA_BAR) / TERMINAL_ALPHA_BAR) ** 0.5


def make_sigmas(cfg: NoiseScheduleConfig) -> torch.Tensor:
    """σ_1..σ_T (float64, (T,), increasing) of the configured kind, before the resolution shift."""
    T = cfg.num_timesteps
    if cfg.kind == "karras":
        ramp = torch.linspace(0, 1, T, dtype=torch.float64)
        lo, hi = cfg.sigma_min ** (1 / cfg.rho), cfg.sigma_max ** (1 / cfg.rho)
        return (lo + ramp * (hi - lo)) ** cfg.rho
    if cfg.kind == "flow":  # t = 1/T … 1; t = 1 (pure noise) is the zero-terminal-SNR σ_T
        t = torch.arange(1, T + 1, dtype=torch.float64) / T
        return torch.cat([t[:-1] / (1 - t[:-1]), t.new_tensor([TERMINAL_SIGMA])])
    betas = make_betas(cfg)
    if cfg.zero_terminal_snr:
        betas = rescale_zero_terminal_snr(betas)
    alphas_cumprod = torch.cumprod(1 - betas, dim=0)
    if cfg.zero_terminal_snr:
        alphas_cumprod[-1] = TERMINAL_ALPHA_BAR
    return ((1 - alphas_cumprod) / alphas_cumprod).sqrt()


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Lin et al. 2024, Alg. 1: shift and scale √ᾱ_t so that √ᾱ_T = 0 and √ᾱ_1 is unchanged; β_T
    becomes 1."""
    sqrt_ab = torch.cumprod(1 - betas, dim=0).sqrt()
    first, last = sqrt_ab[0].clone(), sqrt_ab[-1].clone()
    alpha_bar = ((sqrt_ab - last) * first / (first - last)) ** 2
    alphas = torch.cat([alpha_bar[:1], alpha_bar[1:] / alpha_bar[:-1]])
    return 1 - alphas


class NoiseSchedule:
    """Discrete schedule tables (float32, shape (T,), index t = 0..T−1 ↔ the paper's t = 1..T).

    betas β_t; alphas_cumprod ᾱ_t = Π_{s≤t}(1 − β_s); sigmas σ_t = √((1 − ᾱ_t)/ᾱ_t), increasing in
    t. With zero_terminal_snr, ᾱ_T is TERMINAL_ALPHA_BAR rather than 0, so that the VE view x = z/√ᾱ
    stays finite: the signal left in z_T (√ᾱ_T ≈ 2e-4) is far below anything a network resolves.
    """

    def __init__(self, cfg: NoiseScheduleConfig):
        self.config = cfg
        sigmas = make_sigmas(cfg) * cfg.shift
        alphas_cumprod = 1 / (1 + sigmas ** 2)
        self.betas = (1 - alphas_cumprod / torch.cat([alphas_cumprod.new_ones(1),
                                                      alphas_cumprod[:-1]])).float()
        self.alphas_cumprod = alphas_cumprod.float()
        self.sigmas = sigmas.float()
        self.log_sigmas = self.sigmas.log()

    @property
    def num_timesteps(self) -> int:
        return self.config.num_timesteps

    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        """ᾱ at integer timesteps t (B,) → (B,), on t's device."""
        return self.alphas_cumprod.to(t.device)[t]

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """Continuous timestep for σ by linear interpolation in log σ (exact integers on the
        discrete grid)."""
        log_sigmas = self.log_sigmas.to(sigma.device)
        # tensor bounds: no host sync per step
        log_sigma = sigma.float().log().clamp(log_sigmas[0], log_sigmas[-1])
        hi = torch.searchsorted(log_sigmas, log_sigma).clamp(1, len(log_sigmas) - 1)
        lo = hi - 1
        w = (log_sigma - log_sigmas[lo]) / (log_sigmas[hi] - log_sigmas[lo])
        return lo + w.clamp(0, 1)
