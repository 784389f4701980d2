"""Rebuild models from latentdiff checkpoints (config from the metadata, weights from the
tensors)."""

from pathlib import Path

import dataclasses

import torch

from latentdiff.autoencoder import Autoencoder, LatentCodec, LatentStats, build_autoencoder
from latentdiff.checkpoints.io import (KIND, check_replaceable, load_weights, prefixed,
                                       read_metadata, read_tensors,
                                      require_kind, save_checkpoint)
from latentdiff.conditioning.conditioner import ConditionedUNet, Conditioner
from latentdiff.conditioning.kinds import conditioner_from_metadata, conditioner_metadata
from latentdiff.config import (AutoencoderConfig, CoarseToFineConfig, DiffusionConfig, LoRAConfig,
                               StudentConfig, UNetConfig, from_dict, to_dict)
from latentdiff.network import (ExpertNetwork, build_network, expert_network, network_config,
                                network_fields, network_metadata)
from latentdiff.errors import UserError
from latentdiff.ldm import LatentDiffusion
from latentdiff.nn.lora import ADAPTER_KEY, AdapterView, adaptable_layers, add_lora, merged_state
from latentdiff.noise import NoiseSchedule
from latentdiff.preconditioning import make_preconditioning
from latentdiff.truncation import TruncatedPrior, prior_from_metadata

AUTOENCODER, LATENT_DIFFUSION, CLASSIFIER = "autoencoder", "latent_diffusion", "classifier"
VQ_DIFFUSION = "vq_diffusion"  # `checkpoints/vq_diffusion.py`
WAVEDIFF = "wavediff"  # `checkpoints/wavediff.py`
BUNDLED_MODEL = Path(__file__).resolve().parent.parent / "models" / "emoji-text.safetensors"


def bundled_model() -> Path:
    """The shipped default: the emoji text-to-image model (`configs/ldm-emoji-text.yaml`, exported
    in fp16)."""
    if not BUNDLED_MODEL.is_file():
        raise UserError(f"the bundled model {BUNDLED_MODEL} is missing from this installation; "
                        f"reinstall latentdiff or pass a checkpoint")
    return BUNDLED_MODEL


def load_autoencoder(path: str | Path, device: torch.device | str = "cpu") -> Autoencoder:
    """The first stage of an autoencoder checkpoint, or the one inside a latent-diffusion,
    VQ-Diffusion or WaveDiff checkpoint (eval mode)."""
    metadata = read_metadata(path)
    if metadata.get(KIND) not in (AUTOENCODER, LATENT_DIFFUSION, VQ_DIFFUSION, WAVEDIFF):
        require_kind(path, AUTOENCODER, "train one with `latentdiff train-autoencoder CONFIG`")
    autoencoder = build_autoencoder(from_dict(AutoencoderConfig, metadata["autoencoder_config"]))
    load_weights(autoencoder, read_tensors(path, "autoencoder."), str(path))
    return autoencoder.eval().requires_grad_(False).to(device)


def trained_network(unet: torch.nn.Module, conditioner: Conditioner | None) -> torch.nn.Module:
    """What the optimiser trains: the UNet, or the UNet with τ_θ in front when the conditioner has
    one."""
    trained = conditioner is not None and conditioner.context_dim and not conditioner.frozen
    return ConditionedUNet(unet, conditioner) if trained else unet


def network_parts(network: torch.nn.Module, suffix: str) -> dict[str, torch.nn.Module]:
    """{checkpoint prefix: module}: "unet" (+ "conditioner" when τ_θ is trained), with `suffix`
    (e.g. "_ema")."""
    if isinstance(network, ConditionedUNet):
        return {f"unet{suffix}": network.unet, f"conditioner{suffix}": network.conditioner}
    return {f"unet{suffix}": network}


def load_conditioner(path: str | Path, metadata: dict, use_ema: bool) -> Conditioner | None:
    """The conditioner stored in a checkpoint's metadata, with its weights (the EMA ones unless
    use_ema=False)."""
    conditioner = conditioner_from_metadata(metadata, Path(path).parent)
    if conditioner is None:
        return None
    if conditioner.has_weights:
        load_weights(conditioner,
                     read_tensors(path, "conditioner_ema." if use_ema else "conditioner."),
                     str(path))
    return conditioner.eval().requires_grad_(False)


def load_latent_diffusion(path: str | Path, device: torch.device | str = "cpu",
                          use_ema: bool = True) -> LatentDiffusion:
    """The whole system of a `latentdiff train` checkpoint, with the EMA weights unless
    use_ema=False."""
    metadata = require_kind(path, LATENT_DIFFUSION,
                            "`latentdiff sample` needs a checkpoint written by `latentdiff "
                                                    "train`")
    if metadata.get("lora_config") is not None:
        return _load_adapter_student(path, metadata, device, use_ema)
    unet = network_from_metadata(metadata)
    prefix = "unet_ema." if use_ema else "unet."
    tensors = read_tensors(path, prefix)
    if not tensors:
        raise UserError(f"{path} holds no {prefix}* weights; pass use_ema={not use_ema}")
    load_weights(unet, tensors, str(path))
    diffusion = from_dict(DiffusionConfig, metadata["diffusion_config"])
    codec = LatentCodec(load_autoencoder(path), LatentStats(**metadata["latent_stats"]))
    conditioner = load_conditioner(path, metadata, use_ema)
    return LatentDiffusion(unet=unet.eval().requires_grad_(False).to(device),
                           codec=codec.to(device),
                           schedule=NoiseSchedule(diffusion.schedule),
                           prediction=diffusion.prediction,
                           image_size=int(metadata["image_size"]),
                           class_names=tuple(metadata.get("class_names", ())),
                           conditioner=None if conditioner is None else conditioner.to(device),
                           trained_with_null=bool(metadata.get("trained_with_null", False)),
                           sigma_data=diffusion.sigma_data,
                           student=student_config(metadata),
                           prior=_load_prior(path, metadata, device),
                           coarse_to_fine=None if metadata.get("coarse_to_fine") is None
                           else from_dict(CoarseToFineConfig, metadata["coarse_to_fine"]))


def _load_prior(path: str | Path, metadata: dict, device) -> TruncatedPrior | None:
    """A truncated model's prior (`truncation.py`; "truncation" metadata, "prior.*" weights)."""
    if metadata.get("truncation") is None:
        return None
    prior = prior_from_metadata(metadata["truncation"],
                                int(metadata["autoencoder_config"]["latent_channels"]))
    load_weights(prior.network, read_tensors(path, "prior."), str(path))
    return prior.eval().requires_grad_(False).to(device)


def network_from_metadata(metadata: dict) -> torch.nn.Module:
    """A fresh network (or ensemble of experts, routed by the model's preconditioning) of the
    config a latent-diffusion checkpoint's metadata stores."""
    diffusion = from_dict(DiffusionConfig, metadata["diffusion_config"])
    precond = make_preconditioning(NoiseSchedule(diffusion.schedule), diffusion.prediction,
                                   diffusion.sigma_data)
    return expert_network(network_config(metadata), tuple(metadata.get("experts", ())),
                          precond.c_noise)


def initialise_from(path: str | Path, network: torch.nn.Module,
                    conditioner: Conditioner | None) -> None:
    """Start a run (`init_from`) from a trained model's EMA weights: the network's — every expert a
    copy of a single base network (eDiff-I's branching), or an ensemble with the same boundaries as
    it is — and the conditioner's (τ_θ, a learned vocabulary)."""
    metadata = require_kind(path, LATENT_DIFFUSION,
                            "init_from takes a checkpoint written by `latentdiff train`")
    ours = network_fields(network_metadata(network))
    theirs = network_fields(metadata)
    changed = sorted(k for k in ours if k != "experts" and theirs.get(k) != ours[k])
    if changed:
        raise UserError(f"init_from={path} holds another network than this run's (differs in "
                        f"{', '.join(changed)}); use its {theirs['backbone']} config")
    tensors = read_tensors(path, "unet_ema.")
    if isinstance(network, ExpertNetwork) and not theirs["experts"]:
        for expert in network.experts:
            load_weights(expert, tensors, str(path))
    elif theirs["experts"] == ours["experts"]:
        load_weights(network, tensors, str(path))
    else:
        raise UserError(f"init_from={path} has experts at σ {theirs['experts']}, this run at "
                        f"{ours['experts']}; branch from a model without experts or keep its")
    if conditioner is not None:
        conditioner.resume(metadata)
        if conditioner.has_weights:
            load_weights(conditioner,
                         conditioner.initial_state(read_tensors(path, "conditioner_ema.")), str(path))


def load_classifier(path: str | Path, model: LatentDiffusion | None = None,
                    device: torch.device | str = "cpu"):
    """The `NoiseClassifier` of a `latentdiff train-classifier` checkpoint (eval mode), checked
    against the `model` it will guide: the same first stage (by its weights), latent normalisation
    and parameterisation."""
    from latentdiff.classifier import ClassifierNet, NoiseClassifier
    from latentdiff.metrics.features import state_digest

    metadata = require_kind(path, CLASSIFIER, "train one with `latentdiff train-classifier`")
    diffusion = from_dict(DiffusionConfig, metadata["diffusion_config"])
    if model is not None:
        same = (metadata["autoencoder_digest"] == state_digest(model.codec.autoencoder)
                and LatentStats(**metadata["latent_stats"]) == model.codec.stats
                and diffusion.prediction == model.prediction
                and diffusion.schedule == model.schedule.config)
        if not same:
            raise UserError(f"the classifier {path} was trained for another latent space or noise "
                            "schedule than this model's; train one with `latentdiff "
                            "train-classifier` on this model")
    net = ClassifierNet(from_dict(UNetConfig, metadata["classifier_config"]),
                        int(metadata["num_classes"]))
    load_weights(net, read_tensors(path, "classifier."), str(path))
    precond = make_preconditioning(NoiseSchedule(diffusion.schedule), diffusion.prediction,
                                   diffusion.sigma_data)
    classifier = NoiseClassifier(net, precond, tuple(metadata.get("class_names", ())))
    return classifier.eval().requires_grad_(False).to(device)


# what an adapter student trains in full besides its adapters: the new guidance embedding
STUDENT_KEPT = ("guidance_proj.",)


def student_unet(teacher: torch.nn.Module, guided: bool,
                 lora: LoRAConfig | None = None) -> torch.nn.Module:
    """A copy of the teacher's network (float32) with a zero-initialised guidance embedding when
    `guided`, and low-rank adapters on its blocks when `lora` is given (the rest then frozen)."""
    if isinstance(teacher, ExpertNetwork):
        raise UserError("distilling an ensemble of expert denoisers into one student is not "
                        "supported; distil the base model")
    unet = build_network(dataclasses.replace(teacher.config, guidance_embedding=guided))
    missing, unexpected = unet.load_state_dict(teacher.state_dict(), strict=False)  # cast to fp32
    if unexpected or any(not k.startswith(STUDENT_KEPT) for k in missing):
        raise UserError(f"the teacher's UNet does not fit its own config ({missing or unexpected})")
    if lora is not None:
        unet.requires_grad_(False)
        names = adaptable_layers(unet, lora.prefixes)
        if not names:
            raise UserError(f"lora.prefixes={list(lora.prefixes)} name no layer of this teacher's "
                            f"network; use its modules ({', '.join(n for n, _ in unet.named_children())})")
        add_lora(unet, names, lora.rank, lora.alpha)
        for name, parameter in unet.named_parameters():
            parameter.requires_grad_(name.startswith(STUDENT_KEPT) or ADAPTER_KEY in name)
    return unet


def teacher_path(reference: str, student: str | Path) -> Path:
    """Where an adapter student's teacher is: "bundled", an absolute path, or a path relative to
    the student's folder (then to the working directory)."""
    if reference == "bundled":
        return bundled_model()
    beside = Path(student).parent / reference
    return beside if not Path(reference).is_absolute() and beside.is_file() else Path(reference)


def _load_adapter_student(path: str | Path, metadata: dict, device,
                          use_ema: bool) -> LatentDiffusion:
    """An adapter student (`latentdiff distill lcd-lora`): its teacher, the adapters merged into a
    copy of the teacher's UNet."""
    where = teacher_path(metadata["teacher"], path)
    if not where.is_file():
        raise UserError(f"{path} adapts the teacher {metadata['teacher']}, which is not at {where}; "
                        "put the teacher there")
    teacher = load_latent_diffusion(where, device, use_ema)
    config = network_config(metadata)
    unet = student_unet(teacher.unet.cpu(), config.guidance_embedding,
                        from_dict(LoRAConfig, metadata["lora_config"]))
    load_weights(AdapterView(unet, STUDENT_KEPT),
                 read_tensors(path, "unet_ema." if use_ema else "unet."), str(path))
    merged = build_network(config)
    merged.load_state_dict(merged_state(unet))
    return dataclasses.replace(teacher, unet=merged.eval().requires_grad_(False).to(device),
                               student=student_config(metadata))


def student_config(metadata: dict) -> StudentConfig | None:
    """What a student's checkpoint stores of it, None for a diffusion model."""
    stored = metadata.get("student_config")
    return None if stored is None else from_dict(StudentConfig, stored)


def system_metadata(system: LatentDiffusion) -> dict:
    """What rebuilds `system` (configs, latent normalisation, conditioner) as checkpoint
    metadata."""
    return {KIND: LATENT_DIFFUSION, **network_metadata(system.unet),
            "diffusion_config": to_dict(DiffusionConfig(system.schedule.config, system.prediction,
                                                        system.sigma_data)),
            "autoencoder_config": to_dict(system.codec.autoencoder.config),
            "latent_stats": system.codec.stats.to_dict(), "image_size": system.image_size,
            "class_names": list(system.class_names), **conditioner_metadata(system.conditioner),
            "trained_with_null": system.trained_with_null,
            **({} if system.student is None else {"student_config": to_dict(system.student)}),
            **({} if system.prior is None else {"truncation": system.prior.metadata()}),
            **({} if system.coarse_to_fine is None
               else {"coarse_to_fine": to_dict(system.coarse_to_fine)})}


EXPORT_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def torch_dtype(dtype: str) -> torch.dtype:
    """A dtype name (fp32, fp16 or bf16) → the torch dtype; a one-line error for any other name."""
    if dtype not in EXPORT_DTYPES:
        raise UserError(f"unknown dtype {dtype!r}; choose one of {', '.join(EXPORT_DTYPES)}")
    return EXPORT_DTYPES[dtype]


def _cast(tensors: dict[str, torch.Tensor], dtype: str) -> dict[str, torch.Tensor]:
    target = torch_dtype(dtype)
    return {k: v.to(target) if v.is_floating_point() else v for k, v in tensors.items()}


def system_tensors(system: LatentDiffusion) -> dict[str, torch.Tensor]:
    """What samples `system`, as checkpoint tensors: its network as the EMA set, the autoencoder, a
    trained conditioner's weights (as its EMA set) and a truncated chain's prior."""
    parts = {"unet_ema.": system.unet, "autoencoder.": system.codec.autoencoder}
    if system.conditioner is not None and system.conditioner.has_weights:
        parts["conditioner_ema."] = system.conditioner
    if system.prior is not None:
        parts["prior."] = system.prior.network
    return {k: v for prefix, part in parts.items() for k, v in prefixed(prefix, part.state_dict()).items()}


def save_latent_diffusion(system: LatentDiffusion, path: str | Path, dtype: str = "fp32") -> Path:
    """`system` as a sampling-only latentdiff checkpoint (its weights stored as the EMA set), e.g. a
    converted published model; `load_latent_diffusion` and `latentdiff sample` read it back. A
    frozen text encoder loaded from another file (Stable Diffusion's CLIP) is written beside it as a
    Hugging Face folder `<stem>-text-encoder`."""
    tensors = system_tensors(system)
    metadata = system_metadata(system)
    # its folder, or one written beside `path`
    if system.conditioner is not None and system.conditioner.frozen:
        encoder = system.conditioner.tokenizer
        folder = encoder.folder or encoder.save(Path(path).with_name(f"{Path(path).stem}-text-encoder")).name
        metadata["conditioning_config"]["text"]["pretrained"] = str(folder)
    check_replaceable(path)
    return save_checkpoint(path, _cast(tensors, dtype), metadata)


TRAIN_STATE_KEYS = ("train_state", "optimizer")


def export_latent_diffusion(src: str | Path, dst: str | Path, dtype: str = "fp16",
                            ema: dict[str, torch.Tensor] | None = None,
                            extra: dict | None = None) -> Path:
    """A sampling-only copy of a `latentdiff train` checkpoint: the EMA networks and the
    autoencoder, floats cast to `dtype` (fp32 | fp16 | bf16; loading casts back to the model's
    dtype), without the raw weights, the optimizer state or the training state. `latentdiff sample`
    reads it like any checkpoint. `ema` replaces EMA tensors ("unet_ema.<name>", …; e.g. a post-hoc
    EMA); `extra` is added to the metadata."""
    torch_dtype(dtype)
    check_replaceable(dst, src)
    metadata = require_kind(src, LATENT_DIFFUSION,
                            "export takes a checkpoint written by `latentdiff train`")
    keep = ("unet_ema.", "conditioner_ema.", "autoencoder.", "prior.")
    tensors = {k: v for k, v in read_tensors(src).items() if k.startswith(keep)}
    for key, value in (ema or {}).items():
        if key not in tensors or tensors[key].shape != value.shape:
            raise UserError(f"{src} has no {key} of shape {tuple(value.shape)}: the replacement "
                            "weights belong to another model")
        tensors[key] = value
    tensors = _cast(tensors, dtype)
    if not any(k.startswith("unet_ema.") for k in tensors):
        raise UserError(f"{src} holds no EMA weights (unet_ema.*) to export")
    return save_checkpoint(dst, tensors, {**{k: v for k, v in metadata.items()
                                             if k not in TRAIN_STATE_KEYS}, **(extra or {})})
