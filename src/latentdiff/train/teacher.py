"""The teacher of spectrum-aware distillation (`distillation.teacher` of `latentdiff train`; Yang et
al. 2023, Sec. 4.2): a trained model on the run's own first stage and noise schedule, whose network
outputs the run's (slimmer) network also learns at every training step."""

import torch

from latentdiff.autoencoder import Autoencoder, LatentStats
from latentdiff.checkpoints.models import load_latent_diffusion
from latentdiff.coarse_to_fine import refuse_stages
from latentdiff.config import LatentDiffusionTrainConfig
from latentdiff.errors import UserError
from latentdiff.metrics.features import state_digest
from latentdiff.objectives import Teacher

# kinds whose condition is the same tensors for any network (labels or concatenated inputs); text
# and layout tokens belong to each model's own tokenizer and τ_θ
DISTILLABLE_KINDS = ("none", "semantic", "superres", "inpaint")


def load_teacher(cfg: LatentDiffusionTrainConfig, autoencoder: Autoencoder,
                 device: torch.device) -> tuple[Teacher, LatentStats]:
    """The teacher (eval mode, on `device`) and its latent normalisation, which the student takes
    over so both read the same latents; one-line errors for a teacher of another first stage,
    schedule, parameterisation or conditioning."""
    path = cfg.distillation.teacher
    if cfg.conditioning.kind not in DISTILLABLE_KINDS:
        raise UserError(f"distillation.teacher works with conditioning.kind "
                        f"{', '.join(DISTILLABLE_KINDS)} or class labels, not "
                        f"{cfg.conditioning.kind}")
    model = load_latent_diffusion(path, device)
    refuse_stages(model, path, "a distillation teacher")
    if state_digest(model.codec.autoencoder) != state_digest(autoencoder):
        raise UserError(f"the teacher {path} has another first stage than autoencoder="
                        f"{cfg.autoencoder}; distil on the teacher's autoencoder")
    same = (model.schedule.config == cfg.diffusion.schedule
            and model.prediction == cfg.diffusion.prediction
            and model.sigma_data == cfg.diffusion.sigma_data)
    if not same:
        raise UserError(f"the teacher {path} has another noise schedule or parameterisation than "
                        "this run; copy its diffusion section")
    net, ours = model.unet.config, cfg.network
    if (net.num_classes, net.in_channels, net.context_dim) != (ours.num_classes, ours.in_channels,
                                                               ours.context_dim):
        raise UserError(f"the teacher {path} takes other inputs (classes, channels, context) than "
                        f"this run's {cfg.backbone}")
    if model.conditioner is not None and model.conditioner.kind != cfg.conditioning.kind:
        raise UserError(f"the teacher {path} is conditioned on {model.conditioner.kind}, this run "
                        f"on {cfg.conditioning.kind}")
    teacher = Teacher(model.denoiser, cfg.distillation.weight, cfg.distillation.alpha)
    return teacher, model.codec.stats
