"""The diffusers scheduler settings under which a latentdiff sampler follows the same trajectory (to
float error, tests/test_sampler_parity.py), for parity tests, like-for-like benchmarks and users
moving between the two."""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PeerScheduler:
    """`sampler` with `options` on the `spacing` grid (ending at `final`) ≡ diffusers' `scheduler`
    class with `scheduler_options`; `vp`: the peer works on VP-scaled samples z (else on
    x = z·√(1 + σ²), σ-space); `consistency`: the network is a latent consistency model, its
    denoiser wrapped in LCM's boundary (`consistency.LCMBoundary`)."""

    sampler: str
    spacing: str
    scheduler: str
    scheduler_options: dict
    vp: bool = True
    options: dict = field(default_factory=dict)
    final: str = "zero"
    consistency: bool = False


PEERS = {
    "ddim": PeerScheduler("ddim", "leading", "DDIMScheduler",
                          {"set_alpha_to_one": True, "steps_offset": 0,
                           "clip_sample": False, "timestep_spacing": "leading"}),
    "ddim_trailing": PeerScheduler("ddim", "trailing", "DDIMScheduler",
                                   {"set_alpha_to_one": True, "clip_sample": False,
                                    "timestep_spacing": "trailing"}),
    "dpmpp_2m": PeerScheduler("dpmpp_2m", "linspace", "DPMSolverMultistepScheduler",
                              {"algorithm_type": "dpmsolver++", "solver_order": 2,
                               "solver_type": "midpoint",
                               "lower_order_final": True, "final_sigmas_type": "zero",
                               "timestep_spacing": "linspace"}),
    "dpmpp_3m_legacy": PeerScheduler("dpmpp_3m", "linspace", "DPMSolverMultistepScheduler",
                                     {"algorithm_type": "dpmsolver++", "solver_order": 3,
                                      "lower_order_final": True,
                                      "final_sigmas_type": "zero", "timestep_spacing": "linspace"},
                                     options={"legacy": True}),
    "euler": PeerScheduler("euler", "leading", "EulerDiscreteScheduler",
                           {"timestep_spacing": "leading", "steps_offset": 0}, vp=False),
    "euler_ancestral": PeerScheduler("euler_ancestral", "trailing",
                                     "EulerAncestralDiscreteScheduler",
                                     {"timestep_spacing": "trailing"}, vp=False),
    "heun": PeerScheduler("heun", "leading", "HeunDiscreteScheduler",
                          {"timestep_spacing": "leading", "steps_offset": 0},
                          vp=False),
    "unipc": PeerScheduler("unipc", "linspace", "UniPCMultistepScheduler",
                           {"solver_order": 2, "solver_type": "bh2", "predict_x0": True,
                            "lower_order_final": True,
                            "final_sigmas_type": "zero", "timestep_spacing": "linspace"}),
    "unipc_bh1": PeerScheduler("unipc_bh1", "linspace", "UniPCMultistepScheduler",
                               {"solver_order": 2, "solver_type": "bh1", "predict_x0": True,
                                "timestep_spacing": "linspace"}),
    "plms": PeerScheduler("plms", "leading", "PNDMScheduler",
                          {"skip_prk_steps": True, "set_alpha_to_one": True,
                           "steps_offset": 0, "timestep_spacing": "leading"}),
    # latent consistency models: LCM's skipping-step timesteps of 50, its boundary (timestep
    # scaling 10, σ_data 0.5)
    "lcm": PeerScheduler("consistency", "lcm", "LCMScheduler",
                         {"original_inference_steps": 50, "timestep_scaling": 10.0,
                          "set_alpha_to_one": True, "clip_sample": False},
                         consistency=True),
    # CompVis's own DDIM/PLMS: timesteps 1, 1 + T/n, …, the last step to ᾱ_0 (final="t0"); the
    # second is the scheduler config Stable Diffusion's published folders ship
    "ddim_compvis": PeerScheduler("ddim", "compvis", "DDIMScheduler",
                                  {"set_alpha_to_one": False,
                                   "steps_offset": 1, "clip_sample": False,
                                   "timestep_spacing": "leading"}, final="t0"),
    "plms_compvis": PeerScheduler("plms", "compvis", "PNDMScheduler",
                                  {"skip_prk_steps": True,
                                   "set_alpha_to_one": False, "steps_offset": 1,
                                   "timestep_spacing": "leading"}, final="t0"),
}
