"""The latent diffusion system as one object: codec (E, D, s) + the denoiser network (the UNet ε_θ,
a U-ViT, a DiT or experts of one) + noise schedule + parameterisation."""

from dataclasses import dataclass

import torch

from latentdiff.autoencoder.codec import LatentCodec
from latentdiff.conditioning.conditioner import Conditioner
from latentdiff.config import CoarseToFineConfig, StudentConfig
from latentdiff.consistency import Boundary, ConsistencyDenoiser
from latentdiff.denoiser import Denoiser
from latentdiff.noise import NoiseSchedule
from latentdiff.preconditioning import make_preconditioning
from latentdiff.network import NetworkCost, network_cost
from latentdiff.truncation import TruncatedPrior


@dataclass
class LatentDiffusion:
    """Everything needed to sample: images are (B, C, image_size, image_size) in [-1, 1]."""

    # the denoiser network (named as the original's `unet`; any backbone: `network.py`)
    unet: torch.nn.Module
    codec: LatentCodec
    schedule: NoiseSchedule
    prediction: str
    image_size: int
    class_names: tuple[str, ...] = ()
    # text/layout/spatial conditioning (paper Sec. 3.3); None: labels or nothing
    conditioner: Conditioner | None = None
    # condition dropout during training: classifier-free guidance is possible
    trained_with_null: bool = False
    sigma_data: float = 1.0  # of prediction "edm"
    # a distilled student: consistency model or not, its sampling defaults
    student: StudentConfig | None = None
    # a truncated chain's start (TDPM, `truncation.py`): samples run timesteps t_trunc … 0 from it
    prior: TruncatedPrior | None = None
    # Frido's coarse-to-fine stages over the codec's feature pyramid (`coarse_to_fine.py`): the
    # network denoises one level per stage
    coarse_to_fine: CoarseToFineConfig | None = None

    @property
    def denoiser(self) -> Denoiser | ConsistencyDenoiser:
        """D(x; σ, cond), or the consistency function f(x, σ, cond) of a consistency student; cond
        carries an encoded context (see `pipelines.generate`), so the UNet alone suffices."""
        denoiser = Denoiser(self.unet, make_preconditioning(self.schedule, self.prediction,
                                                            self.sigma_data))
        if self.student is None or not self.student.consistency:
            return denoiser
        return ConsistencyDenoiser(denoiser, Boundary.of(self.student))

    @property
    def sampling_defaults(self) -> dict:
        """`generate`'s sampler, steps, spacing, guidance scale and lcm grid when the caller gives
        none: DDIM, 50 steps (at most t_trunc + 1 on a truncated chain), uniform, no guidance; a
        student's own (its sampler and steps on the grid it was distilled on, its guidance
        scale)."""
        c = self.student
        if c is None:
            steps = 50 if self.prior is None else min(50, self.prior.t_trunc + 1)
            return {"sampler": "ddim", "steps": steps, "spacing": "uniform", "guidance_scale": 1.0,
                    "original_steps": 50}
        return {"sampler": c.sampler, "steps": c.steps, "spacing": c.spacing,
                "guidance_scale": c.guidance_scale, "original_steps": c.original_steps}

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        side = self.image_size // self.codec.downsampling_factor
        return self.codec.latent_channels, side, side

    @property
    def num_stages(self) -> int:
        """The stages of sampling: the pyramid's levels L of a coarse-to-fine model, else 1."""
        return 1 if self.coarse_to_fine is None else self.codec.autoencoder.config.pyramid_levels

    @property
    def state_shape(self) -> tuple[int, int, int]:
        """The shape of the network's x: the latent's, or one level's (c/L, h, w) of a
        coarse-to-fine model."""
        c, h, w = self.latent_shape
        return c // self.num_stages, h, w

    @property
    def size_multiple(self) -> int:
        """Sides of a sample (or of an input image) in pixels must be multiples of this: the
        autoencoder's f times the network's (the UNet's 2^(levels − 1), a transformer's patch)."""
        return self.codec.downsampling_factor * self.unet.config.latent_multiple

    @property
    def num_classes(self) -> int | None:
        """Class count (the null class included) of class-conditional models: a label embedding in
        the UNet or a class token in the conditioner."""
        if self.conditioner is not None and self.conditioner.num_classes:
            return self.conditioner.num_classes
        return self.unet.config.num_classes

    def network_cost(self) -> NetworkCost:
        """Parameters and GFLOPs of one network evaluation at this model's latent size, with its
        conditioning inputs (the null condition's context, a class label, concatenated channels;
        one stage's of a coarse-to-fine model)."""
        cfg, (c, h, w) = self.unet.config, self.state_shape
        cond = {}
        if cfg.context_dim is not None:
            encoded = self.conditioner.condition([self.conditioner.null_input()], self.device)
            cond.update(context=encoded.context, context_mask=encoded.context_mask)
        if cfg.num_classes is not None:
            cond["class_labels"] = torch.zeros(1, dtype=torch.long, device=self.device)
        if cfg.in_channels > c:
            cond["concat"] = torch.zeros(1, cfg.in_channels - c, h, w, device=self.device)
        if cfg.guidance_embedding:
            cond["guidance"] = torch.ones(1, device=self.device)
        return network_cost(self.unet, (c, h, w), **cond)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device
