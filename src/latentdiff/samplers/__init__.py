"""Samplers: pure functions sample(denoiser, x_T, sigmas, *, cond, generator, callback,
**options) → x_0.

`SAMPLERS` maps each name to its function, order and network evaluations (NFE) per step;
`run_sampler` checks the name, the grid and the options and runs it. Samplers keep no state between
calls, so they are safe to share.
"""

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch

from latentdiff.errors import UserError
from latentdiff.samplers.ancestral import sample_ddim, sample_ddpm
from latentdiff.samplers.consistency import sample_consistency
from latentdiff.samplers.dpm_solver import sample_dpmpp_2s, sample_dpmpp_multistep
from latentdiff.samplers.grids import SPACINGS, check_grid, sigma_grid, timesteps
from latentdiff.samplers.karras import sample_euler, sample_euler_ancestral, sample_heun, sample_lms
from latentdiff.samplers.plms import sample_plms
from latentdiff.samplers.preconditioned import Preconditioner, sample_reverse_sde
from latentdiff.samplers.unipc import sample_unipc


@dataclass(frozen=True)
class Sampler:
    function: Callable
    order: int  # convergence order of the deterministic version (global error ∝ step^order)
    nfe_per_step: str
    stochastic: bool
    summary: str


SAMPLERS: dict[str, Sampler] = {
    "ddim": Sampler(sample_ddim, 1, "1", False,
                    "DDIM (Song et al. 2021); eta > 0 adds noise (eta = 1: DDPM)"),
    "ddpm": Sampler(sample_ddpm, 1, "1", True,
                    "DDPM ancestral (Ho et al. 2020); variance small | large"),
    "plms": Sampler(sample_plms, 2, "1 (+1 on the first step)", False,
                    "PLMS / PNDM pseudo linear multistep (Liu et al. 2022), the LDM repository's "
                    "fast sampler"),
    "euler": Sampler(sample_euler, 1, "1", False,
                     "Euler on the probability-flow ODE (= DDIM eta 0)"),
    "euler_ancestral": Sampler(sample_euler_ancestral, 1, "1", True,
                               "Euler ancestral (k-diffusion); eta, s_noise"),
    "heun": Sampler(sample_heun, 2, "2 (1 on the last step)", False,
                    "Heun (Karras et al. 2022, Alg. 2); s_churn > 0 adds EDM's stochastic churn"),
    "lms": Sampler(sample_lms, 4, "1", False, "linear multistep in σ (k-diffusion); order"),
    "dpmpp_2m": Sampler(functools.partial(sample_dpmpp_multistep, order=2), 2, "1", False,
                        "DPM-Solver++(2M) (Lu et al. 2022)"),
    "dpmpp_3m": Sampler(functools.partial(sample_dpmpp_multistep, order=3), 3, "1", False,
                        "DPM-Solver++(3M), third order (legacy=true: as diffusers, second order)"),
    "dpmpp_2s": Sampler(sample_dpmpp_2s, 2, "2 (1 on the last step)", False,
                        "DPM-Solver++(2S) singlestep; eta > 0: ancestral"),
    "dpmpp_2m_sde": Sampler(functools.partial(sample_dpmpp_multistep, order=2, eta=1.0), 2, "1",
                            True,
                            "SDE-DPM-Solver++(2M), midpoint; eta, s_noise"),
    "dpmpp_3m_sde": Sampler(functools.partial(sample_dpmpp_multistep, order=3, eta=1.0), 3, "1",
                            True,
                            "SDE-DPM-Solver++(3M)"),
    "unipc": Sampler(sample_unipc, 3, "1", False,
                     "UniPC-2, B(h) = e^h − 1 (Zhao et al. 2023); order (predictor), "
                     "variant bh1 | bh2"),
    "unipc_bh1": Sampler(functools.partial(sample_unipc, variant="bh1"), 3, "1",
                         False, "UniPC-2, B(h) = h"),
    "reverse_sde": Sampler(sample_reverse_sde, 1, "1 (+ corrector_steps)", True,
                           "Euler–Maruyama on the reverse SDE (Song et al. 2021); corrector_steps "
                           "(Langevin), snr; a Preconditioner makes it TDAS (Ma et al. 2022)"),
    "consistency": Sampler(sample_consistency, 1, "1", True,
                           "multistep consistency sampling (Song et al. 2023, Alg. 1; diffusers' "
                           "LCMScheduler): for consistency models and students, spacing lcm"),
}


def check_sampler(name: str) -> None:
    if name not in SAMPLERS:
        raise UserError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")


def sampler_options(name: str) -> list[str]:
    """The keyword options a sampler takes besides cond, generator and callback (options its entry
    fixes, such as dpmpp_2m's order, are not; eta stays adjustable)."""
    function = SAMPLERS[name].function
    fixed = set(getattr(function, "keywords", {})) - {"eta"}
    parameters = inspect.signature(function).parameters
    return [p for p, v in parameters.items()
            if v.kind == v.KEYWORD_ONLY and p not in ("cond", "generator", "callback", *fixed)]


def run_sampler(name: str, denoiser: Callable, x: torch.Tensor, sigmas: torch.Tensor,
                **kwargs) -> torch.Tensor:
    """SAMPLERS[name] with one-line errors for an unknown name, a bad grid and unknown or invalid
    options."""
    check_sampler(name)
    check_grid(sigmas)
    known = set(sampler_options(name)) | {"cond", "generator", "callback"}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise UserError(f"sampler {name} has no option {', '.join(unknown)}; its options: "
                        f"{', '.join(sampler_options(name)) or 'none'}")
    function = SAMPLERS[name].function
    # a value of the default's type (ints pass where floats are expected)
    for option, value in kwargs.items():
        default = inspect.signature(function).parameters[option].default
        expected = (int, float) if isinstance(default, float) else type(default)
        if option not in ("cond", "generator", "callback") and default is not None and (
                not isinstance(value, expected)
                or isinstance(value, bool) != isinstance(default, bool)):
            raise UserError(f"sampler {name}: option {option}={value!r} must be a "
                            f"{type(default).__name__} like its default {default!r}")
    try:
        return function(denoiser, x, sigmas, **kwargs)
    except ValueError as e:  # option values the sampler checks (eta < 0, unknown variant, ...)
        raise UserError(f"sampler {name}: {e}") from None


__all__ = ["SAMPLERS", "SPACINGS", "Preconditioner", "Sampler", "check_sampler", "run_sampler", "sample_ddim",
           "sample_ddpm", "sampler_options",
           "sigma_grid", "timesteps"]
