"""`latentdiff train-classifier MODEL CONFIG`: the noise-aware classifier p_φ(y | z_t, σ) of
classifier guidance (Dhariwal & Nichol 2021, Sec. 4), trained on noised latents of labelled data.

Every step draws z₀ = s·(μ + σ_post·n) from the cached posteriors, a noise level σ as the diffusion
model's training does (uniform t) and x = z₀ + σ·ε; the loss is the cross-entropy of the label, plus
λ·(log K − H(p_φ(· | x, σ))) with `entropy_weight` λ > 0 (Li et al. 2022: the entropy-aware
objective that keeps the classifier from being sure of half-made images). At the end, the held-out
accuracy at six noise levels goes into metrics.jsonl and the checkpoint.
"""

import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from lightning_fabric import Fabric

from latentdiff.autoencoder import LatentCodec, LatentStats
from latentdiff.checkpoints.io import KIND, prefixed, read_metadata
from latentdiff.checkpoints.models import CLASSIFIER, LATENT_DIFFUSION, load_autoencoder
from latentdiff.classifier import ClassifierNet, NoiseClassifier, classifier_trunk
from latentdiff.config import (ClassifierTrainConfig, DiffusionConfig, ObjectiveConfig, from_dict,
                               to_dict)
from latentdiff.data import rank_slice
from latentdiff.metrics.features import state_digest
from latentdiff.errors import UserError
from latentdiff.noise import NoiseSchedule
from latentdiff.objectives import draw_sigmas
from latentdiff.preconditioning import append_dims, make_preconditioning
from latentdiff.train.autoencoder import encode_posteriors, load_training_data
from latentdiff.train.engine import (Run, check_same, make_fabric, make_optimizer, resume_state,
                                     seeded, step_generator, train_state, training_loop)
from latentdiff.train.latent_batches import CachedLatents

log = logging.getLogger(__name__)
ACCURACY_LEVELS = 6  # noise levels of the held-out accuracy, t evenly spaced over the schedule


def train_classifier(cfg: ClassifierTrainConfig, resume: bool = False) -> Path:
    """Train (or continue with resume=True) and return the path of the final checkpoint."""
    fabric = make_fabric(cfg.train)
    return fabric.launch(_train, cfg, resume)


def _guided_space(cfg: ClassifierTrainConfig) -> tuple[DiffusionConfig, LatentStats | None]:
    """The diffusion process and latent normalisation of the model to guide (None: an autoencoder
    checkpoint, the normalisation is measured)."""
    metadata = read_metadata(cfg.model)
    if metadata.get(KIND) == LATENT_DIFFUSION:
        return (from_dict(DiffusionConfig, metadata["diffusion_config"]),
                LatentStats(**metadata["latent_stats"]))
    return cfg.diffusion, None


def accuracy_by_level(classifier: NoiseClassifier, schedule: NoiseSchedule, z0: torch.Tensor,
                      labels: torch.Tensor, seed: int, device) -> list[dict]:
    """[{"sigma", "t", "accuracy"}] of the held-out latents z₀ noised at ACCURACY_LEVELS levels."""
    rows = []
    generator = torch.Generator().manual_seed(seed)
    for t in torch.linspace(0, schedule.num_timesteps - 1, ACCURACY_LEVELS).round().long():
        sigma = schedule.sigmas[t]
        x = z0 + sigma * torch.randn(z0.shape, generator=generator)
        correct = 0
        with torch.no_grad():
            for i in range(0, len(x), 256):
                predicted = classifier.logits(x[i:i + 256].to(device), sigma).argmax(-1).cpu()
                correct += int((predicted == labels[i:i + 256]).sum())
        rows.append({"t": int(t), "sigma": round(float(sigma), 4),
                     "accuracy": round(correct / len(x), 4)})
    return rows


def _train(fabric: Fabric, cfg: ClassifierTrainConfig, resume: bool) -> Path:
    tc, device = cfg.train, fabric.device
    run = Run(Path(tc.out_dir), fabric, tc.keep_checkpoints)
    stored = run.start(resume)
    diffusion, stats = _guided_space(cfg)
    autoencoder = load_autoencoder(cfg.model, device)
    train_data, heldout = load_training_data(cfg.data, autoencoder.config.downsampling_factor,
                                             autoencoder.config.in_channels)
    if not train_data.num_classes:
        raise UserError(f"data.dataset={cfg.data.dataset} has no class labels to train a classifier "
                        "on; use digits, mnist or a folder with class sub-folders")
    latents = CachedLatents(autoencoder, train_data, tc.batch_size, tc.seed, device,
                            fabric.global_rank, fabric.world_size)
    if stats is None:
        noise = torch.randn(latents.means.shape, generator=step_generator(tc.seed, -1))
        stats = LatentStats.measure(latents.means + latents.stds * noise)
    codec = LatentCodec(autoencoder, stats)
    schedule = NoiseSchedule(diffusion.schedule)
    precond = make_preconditioning(schedule, diffusion.prediction, diffusion.sigma_data)
    k = train_data.num_classes
    trunk = classifier_trunk(cfg.trunk, autoencoder.config.latent_channels)
    net = seeded(tc.seed, lambda: ClassifierNet(trunk, k))
    optimizer = make_optimizer(net.parameters(), tc)
    start = 0
    if stored is not None:
        check_same(stored["classifier_config"], to_dict(trunk), "the classifier config",
                   run.checkpoint)
        start = resume_state(run.checkpoint, stored, CLASSIFIER, {"classifier": net},
                             {"optimizer": optimizer})
    model, optimizer = fabric.setup(net, optimizer)
    classifier = NoiseClassifier(model, precond)  # the Fabric-wrapped net, preconditioned
    objective = ObjectiveConfig()  # uniform t, as the diffusion model's training
    heldout_means, _ = encode_posteriors(autoencoder, heldout, device) if len(heldout) else (None, 0)

    def metadata(step: int) -> dict:
        result = {KIND: CLASSIFIER, "classifier_config": to_dict(trunk), "num_classes": k,
                  "class_names": list(train_data.class_names), "config": to_dict(cfg),
                  "diffusion_config": to_dict(diffusion), "latent_stats": stats.to_dict(),
                  "autoencoder_digest": state_digest(autoencoder),
                  "image_size": cfg.data.image_size, **train_state(step, fabric)}
        if step == tc.max_steps and heldout_means is not None and fabric.is_global_zero:
            net.eval()
            result["heldout_accuracy"] = accuracy_by_level(
                NoiseClassifier(net, precond), schedule, codec.normalize(heldout_means),
                heldout.labels, tc.seed, device)
            net.train()
            run.log(step, **{f"heldout_accuracy_t{r['t']}": r["accuracy"]
                             for r in result["heldout_accuracy"]})
            log.info("held-out accuracy by noise level: %s",
                     ", ".join(f"σ={r['sigma']:g}: {r['accuracy']:.3f}"
                               for r in result["heldout_accuracy"]))
        return result

    def save(step: int) -> None:
        run.save(prefixed("classifier.", net.state_dict()), {"optimizer": optimizer},
                 metadata(step))

    def loss_of(step: int) -> torch.Tensor:
        generator = step_generator(tc.seed, step)
        mean, std, data, index = latents.step(step)
        posterior_noise = torch.randn((tc.batch_size, *mean.shape[1:]), generator=generator)
        sigma = draw_sigmas(objective, schedule, diffusion.sigma_data, tc.batch_size, generator)
        noise = torch.randn((tc.batch_size, *mean.shape[1:]), generator=generator)
        posterior_noise, sigma, noise = (rank_slice(v, fabric.global_rank, fabric.world_size)
                                         for v in (posterior_noise, sigma, noise))
        x = codec.normalize(mean + std * posterior_noise) + append_dims(sigma, mean) * noise
        logits = classifier.logits(x.to(device), sigma.to(device))
        labels = data.labels[index].to(device)
        loss = F.cross_entropy(logits.float(), labels, reduction="none")
        if cfg.entropy_weight > 0:
            log_p = logits.float().log_softmax(-1)
            loss = loss + cfg.entropy_weight * (math.log(k) + (log_p.exp() * log_p).sum(-1))
        return loss.mean()

    run.open(cfg, start)
    training_loop(run, fabric, tc, start, "classifier", loss_of, model, optimizer,
                  lambda step: None, save, lambda done: None)
    return run.checkpoint
