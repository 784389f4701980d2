"""Train VQ-Diffusion (Gu et al., CVPR 2022) on a frozen VQ autoencoder's codes:
`latentdiff train-vq-diffusion CONFIG`.

The training images are encoded once (pre-quantisation latents, as the latent model's cache); every
step quantises a batch to its codes x_0 (B, h·w), draws t ~ U{1..T} (or by importance from the loss
history, with the matching weight) and x_t ~ q(x_t | x_0) (`discrete_noise.py`), and minimises the
per-token bound + λ·cross-entropy of p_θ(x̃_0 | x_t, y) (`discrete_objective.py`). Conditions come
from the same conditioners as the latent model's, with condition dropout for classifier-free
guidance; the EMA weights are what is sampled.
"""

import logging
from pathlib import Path

import torch
from lightning_fabric import Fabric

from latentdiff.autoencoder import Autoencoder
from latentdiff.checkpoints.io import prefixed
from latentdiff.checkpoints.models import (VQ_DIFFUSION, load_autoencoder, network_parts,
                                           trained_network)
from latentdiff.checkpoints.vq_diffusion import vq_diffusion_metadata
from latentdiff.conditioning.kinds import build_conditioner
from latentdiff.config import to_dict
from latentdiff.config_systems import VQDiffusionTrainConfig
from latentdiff.data import ImageData, rank_slice, to_uint8
from latentdiff.discrete_noise import MaskReplaceSchedule, draw
from latentdiff.discrete_objective import (TimestepImportance, adaptive_aux_scale,
                                           vq_diffusion_terms)
from latentdiff.errors import UserError
from latentdiff.images import save_image_grid
from latentdiff.pipelines import class_grid_labels
from latentdiff.pipelines.vq_diffusion import generate_vq
from latentdiff.train.autoencoder import load_training_data
from latentdiff.train.conditions import batch_condition
from latentdiff.train.diffusion import check_condition_inputs
from latentdiff.train.ema import EMA
from latentdiff.train.engine import (Run, check_same, make_fabric, make_optimizer, resume_state,
                                     seeded, step_generator, train_state, training_loop)
from latentdiff.train.latent_batches import CachedLatents
from latentdiff.vq_diffusion import CodeTransformer, VQDiffusion

log = logging.getLogger(__name__)


def train_vq_diffusion(cfg: VQDiffusionTrainConfig, resume: bool = False) -> Path:
    """Train (or continue with resume=True) and return the path of the final checkpoint."""
    fabric = make_fabric(cfg.train)
    return fabric.launch(_train, cfg, resume)


def _check_first_stage(cfg: VQDiffusionTrainConfig, autoencoder: Autoencoder) -> None:
    ae = autoencoder.config
    if ae.regularizer != "vq":
        raise UserError(f"autoencoder={cfg.autoencoder} is a {ae.regularizer} autoencoder; "
                        "VQ-Diffusion models the codes of a VQ one: train it with "
                        "`latentdiff train-autoencoder ae-vq-f4-shapes` (or model.regularizer=vq)")
    if ae.pyramid_levels > 1:
        raise UserError(f"autoencoder={cfg.autoencoder} has a feature pyramid of "
                        f"{ae.pyramid_levels} levels; VQ-Diffusion takes one code grid: train a "
                        "VQ autoencoder with model.pyramid_levels=1")
    if cfg.transformer.out_channels != ae.codebook_size:
        raise UserError(f"the autoencoder has {ae.codebook_size} codes; set "
                        f"transformer.out_channels={ae.codebook_size}")


def _parts(network: torch.nn.Module, suffix: str) -> dict[str, torch.nn.Module]:
    """{checkpoint prefix: module}: "transformer" (+ "conditioner" when τ_θ is trained)."""
    return {key.replace("unet", "transformer"): module
            for key, module in network_parts(network, suffix).items()}


def _train(fabric: Fabric, cfg: VQDiffusionTrainConfig, resume: bool) -> Path:
    tc, device = cfg.train, fabric.device
    rank, world_size = fabric.global_rank, fabric.world_size
    run = Run(Path(tc.out_dir), fabric, tc.keep_checkpoints)
    stored = run.start(resume)
    autoencoder = load_autoencoder(cfg.autoencoder, device)
    _check_first_stage(cfg, autoencoder)
    factor = autoencoder.config.downsampling_factor
    train_data, _ = load_training_data(cfg.data, factor, autoencoder.config.in_channels)
    conditioner = seeded(tc.seed + 1, lambda: build_conditioner(cfg.conditioning, train_data,
                                                                cfg.data.dataset))
    check_condition_inputs(cfg.transformer, "transformer", cfg.conditioning, train_data,
                           conditioner)
    latents = CachedLatents(autoencoder, train_data, tc.batch_size, tc.seed, device, rank,
                            world_size)
    K = autoencoder.config.codebook_size
    schedule = MaskReplaceSchedule(cfg.mask_replace, K)
    network = trained_network(seeded(tc.seed, lambda: CodeTransformer(K, cfg.transformer)),
                              conditioner)
    if stored is not None and conditioner is not None:
        conditioner.resume(stored)
    ema = EMA(network, cfg.ema_decay)
    optimizer = make_optimizer(network.parameters(), tc)
    saved = {**_parts(network, ""), **_parts(ema.model, "_ema")}
    start = 0
    if stored is not None:
        check_same(stored["transformer_config"], to_dict(cfg.transformer),
                   "the transformer config", run.checkpoint)
        start = resume_state(run.checkpoint, stored, VQ_DIFFUSION, saved, {"optimizer": optimizer})
        ema.num_updates = int(stored["train_state"]["ema_updates"])
    model, optimizer = fabric.setup(network, optimizer)
    ema.model.to(device)
    ema_parts = _parts(ema.model, "")
    system = VQDiffusion(ema_parts["transformer"], autoencoder, schedule, cfg.data.image_size,
                         train_data.class_names if cfg.transformer.num_classes
                         or (conditioner and conditioner.num_classes) else (),
                         ema_parts.get("conditioner", conditioner), cfg.conditioning.drop_prob > 0)
    h, w = system.code_grid
    cached_conditions = conditioner.dataset_conditions(train_data) if conditioner else None
    # never updated without importance sampling: t stays uniform
    timesteps = TimestepImportance(schedule.T, **(stored or {}).get("train_state", {})
                                   .get("t_importance", {}))

    def save(step: int) -> None:
        tensors = {k: v for prefix, part in saved.items()
                   for k, v in prefixed(f"{prefix}.", part.state_dict()).items()}
        run.save({**tensors, **prefixed("autoencoder.", autoencoder.state_dict())},
                 {"optimizer": optimizer},
                 {**vq_diffusion_metadata(system), "config": to_dict(cfg),
                  **train_state(step, fabric, ema_updates=ema.num_updates,
                                **({"t_importance": timesteps.state()}
                                   if cfg.importance_sampling else {}))})

    def loss_of(step: int) -> torch.Tensor:
        generator = step_generator(tc.seed, step)
        mean, _, data, index = latents.step(step)
        # drawn for the global batch, so that every process takes its rows of one draw
        t, weight = timesteps.draw(tc.batch_size, generator)
        u = torch.rand((tc.batch_size, h * w), generator=generator, dtype=torch.float64)
        t, weight, u = (rank_slice(v, rank, world_size) for v in (t, weight, u))
        with torch.no_grad():
            x0 = autoencoder.quantize(mean.to(device)).indices.flatten(1)  # (B, N)
        x_t = draw(schedule.q_probs(x0, 0, t), uniforms=u)
        cond = batch_condition(conditioner, data, index, generator, None, (h, w),
                               cfg.transformer.num_classes, cfg.conditioning.drop_prob,
                               cached_conditions, rank, world_size).to(device)
        t = t.to(device)
        logits = model(x_t.view(-1, h, w), t, **cond.network_kwargs())
        bound, nll = vq_diffusion_terms(schedule, x0, x_t, t, logits.flatten(2))
        aux = cfg.aux_weight * (adaptive_aux_scale(t, schedule.T).to(nll.dtype)
                                if cfg.adaptive_aux_weight else 1)
        if cfg.importance_sampling:  # every process takes the whole batch's losses, in one order
            timesteps.update(fabric.all_gather(t).flatten().cpu(),
                              fabric.all_gather(bound.detach()).flatten().cpu())
        return ((bound + aux * nll) * weight.to(device, bound.dtype)).mean()

    def preview(step: int) -> None:
        _write_samples(run, system, cfg, train_data, step)

    run.open(cfg, start)
    training_loop(run, fabric, tc, start, "vq-diffusion", loss_of, model, optimizer,
                  lambda step: ema.update(network), save, preview)
    return run.checkpoint


def _write_samples(run: Run, system: VQDiffusion, cfg: VQDiffusionTrainConfig,
                   data: ImageData, step: int) -> None:
    """The preview grid: one row per class, or per training condition (the first 8 training
    images' captions or layouts), or 8 rows of 8."""
    per_row = 8
    labels = class_grid_labels(system.num_classes, per_row) if system.num_classes else None
    n = len(labels) if labels else per_row * 8
    options = {}
    if system.conditioner is not None and labels is None:
        index = torch.arange(8).repeat_interleave(per_row)
        options = system.conditioner.preview_inputs(data, index, None, system.code_grid)
    guidance = cfg.preview_guidance if system.trained_with_null else 1.0
    images = generate_vq(system, seeds=list(range(n)), class_labels=labels,
                         steps=cfg.preview_steps, guidance_scale=guidance, **options)
    save_image_grid(to_uint8(images), run.sample_path(step), ncols=per_row)
