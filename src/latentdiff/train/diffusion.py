"""Train the diffusion stage on a frozen autoencoder's latents: `latentdiff train CONFIG`
(paper Sec. 3.2).

The training images are encoded once into posterior moments (μ, σ) (edm2's latent cache); every step
draws z = s·(μ + σ·n) afresh, so the cache does not freeze the posterior noise. s = 1/std(z) is
measured on these latents when the run starts and stored in the checkpoint.
"""

import dataclasses
import logging
from pathlib import Path

import torch
from lightning_fabric import Fabric

from latentdiff.acceleration import compiled
from latentdiff.autoencoder import Autoencoder, LatentCodec, LatentStats, PixelSpace
from latentdiff.checkpoints.io import prefixed
from latentdiff.coarse_to_fine import network_channels, training_batch
from latentdiff.checkpoints.models import (LATENT_DIFFUSION, initialise_from, load_autoencoder,
                                           network_parts, system_metadata,
                                           trained_network)
from latentdiff.conditioning.conditioner import Conditioner
from latentdiff.conditioning.kinds import build_conditioner
from latentdiff.config import ConditioningConfig, LatentDiffusionTrainConfig, to_dict
from latentdiff.data import ImageData, load_dataset, rank_slice, split_holdout, to_uint8
from latentdiff.data.stream import open_stream
from latentdiff.denoiser import Denoiser
from latentdiff.errors import UserError
from latentdiff.images import save_image_grid
from latentdiff.ldm import LatentDiffusion
from latentdiff.noise import NoiseSchedule
from latentdiff.objectives import denoising_loss, draw_sigmas
from latentdiff.pipelines import class_grid_labels, generate
from latentdiff.preconditioning import make_preconditioning
from latentdiff.train.autoencoder import check_image_size, load_training_data
from latentdiff.train.latent_batches import CachedLatents, StreamedLatents, open_latents
from latentdiff.train.conditions import batch_condition, preview_conditions
from latentdiff.train.ema import EMA
from latentdiff.train.posthoc_ema import PostHocEMA
from latentdiff.train.teacher import load_teacher
from latentdiff.train.engine import (MicroBatches, Run, check_same, due, make_fabric,
                                     make_optimizer, resume_state, seeded, step_generator,
                                     train_state, training_loop)
from latentdiff.network import expert_network, network_fields, network_metadata
from latentdiff.weighting import LearnedLogVariance, loss_weight, with_learned_variance

log = logging.getLogger(__name__)
# `autoencoder: pixels`: no first stage, diffusion on the images themselves (the paper's LDM-1)
PIXELS = "pixels"


def train_latent_diffusion(cfg: LatentDiffusionTrainConfig, resume: bool = False) -> Path:
    """Train (or continue with resume=True) and return the path of the final checkpoint."""
    fabric = make_fabric(cfg.train)
    return fabric.launch(_train, cfg, resume)


def _check_compatible(cfg: LatentDiffusionTrainConfig, autoencoder: Autoencoder, data: ImageData,
                      conditioner: Conditioner | None) -> None:
    c = autoencoder.config.latent_channels
    k = conditioner.concat_channels(c) if conditioner else 0
    net, name = cfg.network, cfg.backbone
    extra = f" + {k} concatenated {cfg.conditioning.kind} channels" if k else ""
    wanted = (c + k, c)
    if cfg.coarse_to_fine.enabled:
        levels = autoencoder.config.pyramid_levels
        if levels == 1:
            raise UserError(f"coarse_to_fine.enabled needs an autoencoder with a feature pyramid; "
                            f"{cfg.autoencoder} has one level: train one with "
                            "model.pyramid_levels=2 (or more)")
        wanted = network_channels(c, levels, k)
        extra = (f" in {levels} pyramid levels, so one stage's {c // levels}{extra} + {c} "
                 f"coarser-level and {levels} stage channels")
    if (net.in_channels, net.out_channels) != wanted:
        raise UserError(f"the autoencoder has {c} latent channels{extra}; set "
                        f"{name}.in_channels={wanted[0]} and {name}.out_channels={wanted[1]}")
    check_condition_inputs(net, name, cfg.conditioning, data, conditioner)
    if getattr(net, "learn_sigma", False):
        raise UserError("dit.learn_sigma is for loading DiT checkpoints (their variance channels "
                        "go unused here); train with dit.learn_sigma=false")


def check_condition_inputs(net, name: str, conditioning: ConditioningConfig, data: ImageData,
                           conditioner: Conditioner | None) -> None:
    """The network config `net` (its section `name`) takes the conditioning's context width and
    the data's classes (+ the null class of condition dropout); else a one-line error."""
    context_dim = conditioner.context_dim if conditioner else None
    if net.context_dim != context_dim:
        raise UserError(f"conditioning.kind={conditioning.kind} needs {name}.context_dim="
                        f"{context_dim if context_dim else 'null'} (the text encoder's width)")
    null = 1 if conditioning.drop_prob > 0 else 0  # classifier-free guidance needs a null class
    if net.num_classes is not None and net.num_classes != (data.num_classes or 0) + null:
        found = f"{data.num_classes} classes" if data.num_classes else "no class labels"
        extra = " + 1 null class (conditioning.drop_prob > 0)" if null else ""
        raise UserError(f"{name}.num_classes={net.num_classes} but the data has "
                        f"{found}{extra}; set "
                        f"{name}.num_classes={data.num_classes + null if data.num_classes else 'null'}")


def _first_stage_and_latents(cfg: LatentDiffusionTrainConfig, fabric: Fabric
                             ) -> tuple[Autoencoder, CachedLatents | StreamedLatents]:
    """The frozen first stage (an autoencoder checkpoint, or the identity for `autoencoder: pixels`)
    and the latents of the training split it is checked against, cached or streamed."""
    tc, device = cfg.train, fabric.device
    rank, world_size = fabric.global_rank, fabric.world_size
    if cfg.autoencoder != PIXELS:
        autoencoder = load_autoencoder(cfg.autoencoder, device)
    elif cfg.data.streamed:
        autoencoder = PixelSpace.of_channels(cfg.data.channels or 3).to(device)
    else:
        data = load_dataset(cfg.data)
        autoencoder = PixelSpace.of_channels(data.channels).to(device)
        train_data, _ = split_holdout(data, cfg.data.holdout, cfg.data.split_seed)
        return autoencoder, CachedLatents(autoencoder, train_data, tc.batch_size, tc.seed, device,
                                          rank, world_size)
    factor, channels = autoencoder.config.downsampling_factor, autoencoder.config.in_channels
    if cfg.data.dataset == "latents":
        if cfg.conditioning.kind in ("superres", "inpaint"):
            raise UserError(f"conditioning.kind={cfg.conditioning.kind} needs the images; train on "
                            "them (data.dataset folder, webdataset or hf), not on latents")
        stream = open_latents(cfg.data, autoencoder, tc.batch_size, tc.seed, rank, world_size)
        return autoencoder, StreamedLatents(autoencoder, stream, device)
    if cfg.data.streamed:
        check_image_size(cfg.data, factor)
        multiple = factor * cfg.network.latent_multiple
        stream = open_stream(dataclasses.replace(cfg.data, channels=channels), tc.batch_size,
                             tc.seed, multiple, rank, world_size)
        return autoencoder, StreamedLatents(autoencoder, stream, device)
    train_data, _ = load_training_data(cfg.data, factor, channels)
    return autoencoder, CachedLatents(autoencoder, train_data, tc.batch_size, tc.seed, device,
                                      rank, world_size)


def _train(fabric: Fabric, cfg: LatentDiffusionTrainConfig, resume: bool) -> Path:
    tc = cfg.train
    run = Run(Path(tc.out_dir), fabric, tc.keep_checkpoints)
    stored = run.start(resume)
    autoencoder, latents = _first_stage_and_latents(cfg, fabric)
    train_data = latents.data  # streamed: the first training images (previews, checks)
    # τ_θ initialised by the seed; a tokenizer learns from every caption
    conditioner = seeded(tc.seed + 1, lambda: build_conditioner(
        cfg.conditioning, latents.vocabulary(), cfg.data.dataset))
    _check_compatible(cfg, autoencoder, train_data, conditioner)
    c = autoencoder.config.latent_channels
    teacher, teacher_stats = (load_teacher(cfg, autoencoder, fabric.device)
                              if cfg.distillation.teacher else (None, None))
    if stored is not None:
        stats = LatentStats(**stored["latent_stats"])
    elif teacher_stats is not None:  # the teacher's latent space
        stats = teacher_stats
    # pixel space: x in [-1, 1] as it is (DDPM)
    elif cfg.scale_factor is not None or cfg.autoencoder == PIXELS:
        stats = LatentStats.global_scale(cfg.scale_factor or 1.0, c)
    else:
        means, stds = latents.stats_sample()
        posterior_noise = torch.randn(means.shape, generator=step_generator(tc.seed, -1))
        stats = LatentStats.measure(means + stds * posterior_noise, cfg.per_channel_normalization)
        log.info("latent normalisation (measured on %d training images): shift %s, scale %s",
                 len(means),
                 [round(v, 4) for v in stats.shift], [round(v, 4) for v in stats.scale])
    codec = LatentCodec(autoencoder, stats)
    if conditioner is not None and conditioner.retrieves:  # the database: the training set
        seeded(tc.seed + 2, lambda: conditioner.set_database(codec.normalize(latents.means),
                                                             list(train_data.captions)))

    schedule = NoiseSchedule(cfg.diffusion.schedule)
    stages = cfg.coarse_to_fine if cfg.coarse_to_fine.enabled else None
    sigma_data = cfg.diffusion.sigma_data
    precond = make_preconditioning(schedule, cfg.diffusion.prediction, sigma_data)
    unet = seeded(tc.seed, lambda: expert_network(cfg.network, cfg.experts, precond.c_noise)
                  .gradient_checkpointing(tc.gradient_checkpointing))
    if stored is None and cfg.init_from is not None:
        initialise_from(cfg.init_from, unet, conditioner)
    network = trained_network(unet, conditioner)
    if tc.channels_last:
        network = network.to(memory_format=torch.channels_last)
    if stored is not None and conditioner is not None:
        conditioner.resume(stored)
    ema = EMA(network, cfg.ema_decay)
    posthoc = (PostHocEMA(network, cfg.posthoc_ema, run.root)
               if cfg.posthoc_ema.snapshot_every else None)
    # u(σ) of the learned weighting (Karras et al. 2024), trained alongside
    log_variance = LearnedLogVariance(seed=tc.seed) if cfg.objective.learned_weighting else None
    optimizer = make_optimizer([*network.parameters(), *(log_variance.parameters()
                                                         if log_variance else ())], tc)
    start = 0
    if stored is not None:
        check_same(network_fields(stored), network_fields(network_metadata(unet)),
                   "the network config", run.checkpoint)
        start = resume_state(run.checkpoint, stored, LATENT_DIFFUSION,
                             _saved_parts(network, ema, posthoc, log_variance),
                             {"optimizer": optimizer})
        ema.num_updates = int(stored["train_state"]["ema_updates"])
    model, optimizer = fabric.setup(network, optimizer)
    u = None if log_variance is None else fabric.setup_module(log_variance)
    ema.model.to(fabric.device)
    if posthoc is not None:
        posthoc.continue_at(start, fabric.device)
    denoiser = Denoiser(compiled(model, tc.compile, fabric.device, "train.compile"), precond)
    # the EMA copy of τ_θ when it is trained, else the (fixed) conditioner
    ema_parts = network_parts(ema.model, "")
    ema_system = LatentDiffusion(ema_parts["unet"], codec, schedule,
                                 cfg.diffusion.prediction, cfg.data.image_size,
                                 train_data.class_names if cfg.network.num_classes
                                 or (conditioner and conditioner.num_classes)
                                 else (),
                                 ema_parts.get("conditioner", conditioner),
                                 cfg.conditioning.drop_prob > 0, sigma_data,
                                 coarse_to_fine=stages)
    cost = ema_system.network_cost()
    log.info("network: %s%s, %.3f M parameters, %.4f GFLOPs per evaluation at the latent %s",
             cfg.backbone, f" × {len(cfg.experts) + 1} experts" if cfg.experts else "",
             cost.parameters / 1e6, cost.gflops, "×".join(map(str, cost.latent_shape)))
    cached_conditions = (conditioner.dataset_conditions(train_data)
                         if conditioner and not cfg.data.streamed else None)

    def save(step: int) -> None:
        parts = _saved_parts(network, ema, posthoc, log_variance)
        tensors = {k: v for prefix, part in parts.items() for k,
                   v in prefixed(f"{prefix}.", part.state_dict()).items()}
        run.save({**tensors, **prefixed("autoencoder.", autoencoder.state_dict())},
                 {"optimizer": optimizer},
                 {**system_metadata(ema_system), "config": to_dict(cfg),
                  "network_cost": dataclasses.asdict(cost),
                  **train_state(step, fabric, ema_updates=ema.num_updates)})

    def loss_of(step: int) -> MicroBatches:
        generator = step_generator(tc.seed, step)
        mean, std, data, index = latents.step(step)
        shape = mean.shape[1:]  # streamed with buckets: this step's bucket
        posterior_noise = torch.randn((tc.batch_size, *shape), generator=generator)
        sigma = draw_sigmas(cfg.objective, schedule, sigma_data, tc.batch_size, generator)
        noise = torch.randn((tc.batch_size, *shape), generator=generator)
        posterior_noise, sigma, noise = (rank_slice(v, fabric.global_rank, fabric.world_size)
                                         for v in (posterior_noise, sigma, noise))
        z0 = codec.normalize(mean + std * posterior_noise).to(fabric.device)
        cond = batch_condition(conditioner, data, index, generator, codec, shape[1:],
                               cfg.network.num_classes, cfg.conditioning.drop_prob,
                               cached_conditions,
                               fabric.global_rank, fabric.world_size)
        cond, sigma, noise = cond.to(fabric.device), sigma.to(fabric.device), noise.to(fabric.device)
        if stages is not None:  # one pyramid level per sample (Frido)
            levels = autoencoder.config.pyramid_levels
            stage = torch.randint(levels, (tc.batch_size,), generator=generator)
            mix_noise = torch.randn((tc.batch_size, *shape), generator=generator)
            stage, mix_noise = (rank_slice(v, fabric.global_rank, fabric.world_size).to(
                fabric.device) for v in (stage, mix_noise))
            z0, noise, cond = training_batch(z0, noise, cond, stage, mix_noise, levels,
                                             stages.noise_mix)
        weight = loss_weight(cfg.objective, sigma, sigma_data)

        def loss_on(rows: slice) -> torch.Tensor:
            loss = denoising_loss(denoiser, z0[rows], sigma[rows], noise[rows], cond.rows(rows),
                                  None if weight is None else weight[rows], teacher)
            return (loss if u is None else with_learned_variance(loss, u(sigma[rows]))).mean()
        return MicroBatches(loss_on, len(z0), tc.accumulate)

    def after_step(step: int) -> None:
        ema.update(network)
        if posthoc is not None:
            posthoc.update(network)

    def snapshot(done: int, last: bool, stopping: bool) -> None:
        if posthoc is not None and fabric.is_global_zero and due(
                done, cfg.posthoc_ema.snapshot_every, last or stopping):
            posthoc.snapshot(done)

    run.open(cfg, start)
    latents.start(start, tc.max_steps)
    training_loop(run, fabric, tc, start, "diffusion", loss_of, model, optimizer, after_step, save,
                  lambda done: _write_samples(run, ema_system, cfg, train_data, done), snapshot,
                  latents.log_values)
    return run.checkpoint


def _saved_parts(network: torch.nn.Module, ema: EMA, posthoc: PostHocEMA | None,
                 log_variance: torch.nn.Module | None) -> dict[str, torch.nn.Module]:
    """{checkpoint prefix: module} of everything a run saves and resumes: the network, its EMA, the
    post-hoc EMA profiles and the learned weighting."""
    parts = {**network_parts(network, ""), **network_parts(ema.model, "_ema")}
    if posthoc is not None:
        parts.update(posthoc.parts())
    if log_variance is not None:
        parts["loss_weighting"] = log_variance
    return parts


def _write_samples(run: Run, system: LatentDiffusion,
                   cfg: LatentDiffusionTrainConfig, data: ImageData,
                   step: int) -> None:
    """A preview grid from the EMA weights: one row per class (class-conditional), one row per
    training condition (the first 8 training images' captions, layouts or spatial inputs), or 8
    columns."""
    if not run.fabric.is_global_zero:
        return
    per_row = cfg.preview.per_class
    labels = class_grid_labels(system.num_classes, per_row) if system.num_classes else None
    n = len(labels) if labels else per_row * 8
    options = {}
    if system.conditioner is not None and labels is None:  # class tokens come with the labels
        options = preview_conditions(system, data, torch.arange(8).repeat_interleave(per_row))
    guidance = cfg.preview.guidance_scale if system.trained_with_null else 1.0
    images = generate(system, seeds=list(range(n)), class_labels=labels,
                      sampler=cfg.preview.sampler,
                      steps=cfg.preview.steps, guidance_scale=guidance, **options)
    save_image_grid(to_uint8(images), run.sample_path(step),
                    ncols=per_row if labels or options else 8)
