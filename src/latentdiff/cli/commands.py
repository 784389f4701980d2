"""What each `latentdiff` command does: check the arguments (outputs, devices, inputs) before any
expensive work, then one library call, then write the result atomically."""

import argparse
import dataclasses
import json
import math
from pathlib import Path

from latentdiff.cli.guides import load_guides
from latentdiff.cli.vq_diffusion import evaluate_vq, is_vq_diffusion, sample_vq
from latentdiff.cli.wavediff import evaluate_wavediff, is_wavediff, sample_wavediff
from latentdiff.errors import UserError
from latentdiff.files import check_output, write_text
from latentdiff.images import IMAGE_OUTPUTS


def device(args: argparse.Namespace) -> str:
    """--device, checked: auto = cuda when available, else cpu; a one-line error for an unknown or
    absent device."""
    import torch

    if args.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        chosen = torch.device(args.device)
    except RuntimeError:
        raise UserError(f"--device {args.device!r} is not a device; use auto, cpu, cuda, "
                        "cuda:N or mps") from None
    if chosen.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"--device {args.device}: latentdiff runs on cpu, cuda or mps")
    if chosen.type == "cuda" and (not torch.cuda.is_available()
                                  or (chosen.index or 0) >= torch.cuda.device_count()):
        raise UserError(f"--device {args.device}: no such CUDA GPU here "
                        f"({torch.cuda.device_count()} found); use --device cpu")
    if chosen.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {args.device}: Apple's MPS is not available here; use "
                        "--device cpu")
    return args.device


def _latent_size(pixels: int, factor: int, max_pixels: int) -> tuple[int, int]:
    if pixels < factor or pixels % factor:
        raise UserError(f"--size {pixels}: give a multiple of the autoencoder's downsampling "
                        f"factor {factor}")
    if pixels * pixels > max_pixels:
        raise UserError(f"--size {pixels}: {pixels}×{pixels} is above the limit of "
                        f"{max_pixels / 1e6:.1f} megapixels; choose a smaller size or raise "
                        "--max-pixels")
    return pixels // factor, pixels // factor


def _sampling(args: argparse.Namespace) -> dict:
    """--sampler/--steps/--spacing/--final/--eta/--option → keyword arguments of `generate`."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    options = {"sampler": args.sampler, "steps": args.steps,
               "spacing": args.spacing, "final": args.final}
    if args.eta is not None:
        options["eta"] = args.eta
    if getattr(args, "interleave", None) is not None:
        options["interleave"] = args.interleave
    for item in args.option:
        key, sep, _ = item.partition("=")
        if not sep or not key:
            raise UserError(f"--option {item!r}: write KEY=VALUE, e.g. --option s_churn=40")
        try:
            value = OmegaConf.to_container(OmegaConf.from_dotlist([item]))
        except OmegaConfBaseException as e:
            raise UserError(f"--option {item!r}: {str(e).splitlines()[0]}") from None
        number = value[key]
        if isinstance(number, str):  # YAML reads "nan" and "inf" as words
            try:
                number = float(number)
            except ValueError:
                number = 0.0
        if isinstance(number, float) and not math.isfinite(number):
            raise UserError(f"--option {item!r}: the value must be a finite number")
        options.update(value)
    return options


def _input_file(path: Path | None, what: str) -> None:
    if path is not None and not Path(path).is_file():
        found = "is a folder" if Path(path).is_dir() else "does not exist"
        raise UserError(f"{what} {path} {found}; give an existing file")


def _negative_needs_prompt(args: argparse.Namespace) -> None:
    if getattr(args, "negative_prompt", None) is not None and getattr(args, "prompt", None) is None:
        raise UserError("--negative-prompt needs --prompt (guidance steers from the negative "
                        "towards the prompt)")


def _load(args: argparse.Namespace, checkpoint, dev: str):
    """The model of any supported checkpoint format, with the command's
    --config/--tokenizer/--variant/--dtype/ --ema options."""
    from latentdiff.checkpoints import load_model
    from latentdiff.checkpoints.models import torch_dtype

    dtype = torch_dtype(getattr(args, "dtype", "fp32"))
    model = load_model(checkpoint, args.config, dev, use_ema=args.use_ema,
                       tokenizer=args.tokenizer, dtype=dtype,
                       variant=args.variant)
    if getattr(args, "compile", False):
        from latentdiff.acceleration import compiled

        model.unet = compiled(model.unet, True, model.device, "--compile")
    return model


def train(args: argparse.Namespace) -> None:
    """`train-autoencoder`, `train`, `train-vq-diffusion`, `train-tdpm` and `train-wavediff`
    differ only in their config class and training function."""
    from latentdiff.config import (AutoencoderTrainConfig,
                                   LatentDiffusionTrainConfig, load_config, to_yaml)
    from latentdiff.config_systems import (TruncatedDiffusionTrainConfig, VQDiffusionTrainConfig,
                                           WaveDiffTrainConfig)
    from latentdiff.train.autoencoder import train_autoencoder
    from latentdiff.train.diffusion import train_latent_diffusion
    from latentdiff.train.truncation import train_tdpm
    from latentdiff.train.vq_diffusion import train_vq_diffusion
    from latentdiff.train.wavediff import train_wavediff

    config_class, run = {"train-autoencoder": (AutoencoderTrainConfig, train_autoencoder),
                         "train": (LatentDiffusionTrainConfig, train_latent_diffusion),
                         "train-vq-diffusion": (VQDiffusionTrainConfig, train_vq_diffusion),
                         "train-tdpm": (TruncatedDiffusionTrainConfig, train_tdpm),
                         "train-wavediff": (WaveDiffTrainConfig, train_wavediff),
                         }[args.command]
    cfg = load_config(config_class, args.config, args.overrides)
    if args.dry_run:
        print(to_yaml(cfg), end="")
        return
    print(f"checkpoint: {run(cfg, resume=args.resume)}")


def infer_dataset(data: str) -> str:
    """The kind of a dataset path: webdataset (tar shards: a pattern, URL or folder of .tar), hf (a
    `datasets` folder or parquet files) or folder (image files)."""
    path = Path(data)
    if "{" in data or ".tar" in data or "://" in data or data.startswith("pipe:"):
        return "webdataset"
    if not path.exists():
        raise UserError(f"{data}: no such file or folder; give a folder of images, WebDataset "
                        "shards or a Hugging Face dataset")
    hf_markers = ("dataset_info.json", "dataset_dict.json", "state.json")
    if path.suffix == ".parquet" or any((path / m).exists() for m in hf_markers) or (
            path.is_dir() and any(path.glob("*.parquet"))):
        return "hf"
    if path.is_dir() and any(path.glob("*.tar")):
        return "webdataset"
    return "folder"


def encode_latents(args: argparse.Namespace) -> None:
    """`latentdiff encode-latents DATA AUTOENCODER OUT [KEY=VALUE ...]`."""
    from latentdiff.config import EncodeLatentsConfig, load_config, to_yaml
    from latentdiff.train.encode_latents import encode_latents as run_encode

    _input_file(args.autoencoder, "autoencoder")
    kind = next((o.split("=", 1)[1] for o in args.overrides if o.startswith("data.dataset=")),
                None) or infer_dataset(args.data)
    cfg = load_config(EncodeLatentsConfig, None, [
        f"data.dataset={kind}", f"data.path={args.data}", "data.holdout=0",
        *(["data.stream=true"] if kind == "folder" else []),
        f"autoencoder={args.autoencoder}", f"out={args.out}", *args.overrides])
    if args.dry_run:
        print(to_yaml(cfg), end="")
        return
    print(f"latents: {run_encode(cfg).parent}")


def distill(args: argparse.Namespace) -> None:
    """`latentdiff distill METHOD TEACHER [KEY=VALUE ...]`."""
    from latentdiff.checkpoints.models import bundled_model
    from latentdiff.config import DistillConfig, load_config, to_yaml
    from latentdiff.train.distill import distill as run_distill

    teacher = bundled_model() if str(args.teacher) == "bundled" else args.teacher
    _input_file(teacher, "teacher")
    cfg = load_config(DistillConfig, None, [f"teacher={teacher}", *args.overrides])
    if args.dry_run:
        print(to_yaml(cfg), end="")
        return
    print(f"checkpoint: {run_distill(cfg, args.method, resume=args.resume)}")


def sample(args: argparse.Namespace) -> None:
    from latentdiff.checkpoints.models import bundled_model
    from latentdiff.data import to_model_range, to_uint8
    from latentdiff.images import load_image, save_image_grid
    from latentdiff.pipelines import generate
    from latentdiff.pipelines.grid import sample_grid
    from latentdiff.pipelines.record import record

    if is_vq_diffusion(args.checkpoint):
        return sample_vq(args, _parser_of(args.command), device(args))
    if is_wavediff(args.checkpoint):
        return sample_wavediff(args, _parser_of(args.command), device(args))
    check_output(args.out, "--out", IMAGE_OUTPUTS)
    _input_file(args.guide_image, "--guide-image")
    _negative_needs_prompt(args)
    options = _sampling(args)
    checkpoint = args.checkpoint or bundled_model()
    model = _load(args, checkpoint, device(args))
    guides = load_guides(args, model, _load, device(args))
    classes = guides.classifier.net.num_classes if guides.classifier is not None else None
    grid = sample_grid(model.num_classes or classes, args.seed, args.n, args.prompt,
                       args.negative_prompt, args.class_label)
    seeds, conditions = grid.seeds, dict(grid.conditions)
    if guides.classifier is not None:  # the grid's classes are the classifier's targets
        labels = conditions.get("class_labels")
        guides = dataclasses.replace(guides, classes=labels)
        if model.num_classes is None:
            conditions.pop("class_labels", None)
    if args.size is not None:
        options["latent_size"] = _latent_size(args.size,
                                              model.codec.downsampling_factor, args.max_pixels)
    if args.guide_image is not None:
        guide = load_image(args.guide_image,
                           model.codec.autoencoder.config.in_channels, args.max_pixels)
        options["image_guide"] = (to_model_range(guide)[None].expand(len(seeds), -1, -1, -1),
                                  args.guide_scale)
    options.update(guidance_scale=args.guidance, guidance_rescale=args.guidance_rescale,
                   guidance_interval=args.guidance_interval, guides=guides, **conditions)
    images = generate(model, seeds=seeds, **options)
    parameters = record(model, checkpoint, "txt2img", seeds, images.shape[-2:], **options)
    path = save_image_grid(to_uint8(images), args.out, grid.ncols, parameters)
    print(f"wrote {path} ({len(seeds)} images)")


def conditional_task(args: argparse.Namespace) -> None:
    """inpaint / img2img / upscale / layout / semantic: read the input, run the pipeline, write one
    image grid."""
    from latentdiff.conditioning.layout import parse_boxes
    from latentdiff.images import draw_boxes, load_image, load_label_map, load_mask, save_image_grid
    from latentdiff.pipelines import conditional
    from latentdiff.pipelines.record import record

    check_output(args.out, "--out", IMAGE_OUTPUTS)
    for name in ("image", "mask", "map"):
        _input_file(getattr(args, name, None), f"--{name}")
    _negative_needs_prompt(args)
    boxes = parse_boxes(args.boxes) if args.command == "layout" else None
    options = {**_sampling(args), "guidance_scale": args.guidance,
               "guidance_rescale": args.guidance_rescale,
               "guidance_interval": args.guidance_interval}
    model = _load(args, args.checkpoint, device(args))
    options["guides"] = load_guides(args, model, _load, device(args))
    seeds = [args.seed + i for i in range(args.n)]
    if getattr(args, "prompt", None) is not None:
        options["prompts"] = [args.prompt] * args.n
        if args.negative_prompt is not None:
            options["negative_prompts"] = [args.negative_prompt] * args.n
    if getattr(args, "class_label", None) is not None:
        options["class_labels"] = [args.class_label] * args.n
    channels, limit = model.codec.autoencoder.config.in_channels, getattr(args, "max_pixels", None)
    if args.command == "inpaint":
        images = conditional.inpaint(model, load_image(args.image, channels, limit),
                                     load_mask(args.mask, limit),
                                     seeds, **options)
    elif args.command == "img2img":
        images = conditional.img2img(model, load_image(args.image, channels, limit), seeds,
                                     args.strength, **options)
    elif args.command == "upscale":
        factor = model.conditioner.config.sr_factor if model.conditioner is not None else 1
        images = conditional.upscale(model,
                                     load_image(args.image, channels, limit // factor ** 2), seeds,
                                     **options)
    elif args.command == "semantic":
        images = conditional.semantic_synthesis(model,
                                                load_label_map(args.map, limit), seeds, **options)
    else:
        images = conditional.layout_to_image(model, boxes, seeds, **options)
        if args.draw_boxes:
            images = draw_boxes(images, boxes)
    parameters = record(model, args.checkpoint, args.command, seeds, images.shape[-2:],
                        strength=getattr(args, "strength", None), boxes=boxes, **options)
    print(f"wrote {save_image_grid(images, args.out, min(args.n, 8), parameters)} ({args.n} images)")


def data_config(stored, data: str | None, image_size: int | None = None,
                channels: int | None = None):
    """The data config to evaluate against: the checkpoint's own (`stored`), or --data: a bundled
    dataset name, a folder of images (read at `image_size`, `channels`), or MNIST IDX files / an
    .npz."""
    from latentdiff.config import DATASETS

    if data is None:
        return stored
    path = Path(data)
    if data in DATASETS and not path.exists():
        return dataclasses.replace(stored, dataset=data, path=None)
    if not path.exists():
        raise UserError(f"--data {data}: no such dataset or path; give one of "
                        f"{', '.join(DATASETS[:4])} or a folder of images")
    idx = path.is_dir() and any(path.glob("*idx3*"))
    if path.suffix == ".npz" or idx or ".idx" in path.name or "-idx" in path.name:
        return dataclasses.replace(stored, dataset="mnist", path=str(path))
    if not path.is_dir():
        raise UserError(f"--data {data}: give a folder of images, MNIST IDX files or an .npz")
    return dataclasses.replace(stored, dataset="folder", path=str(path),
                               image_size=image_size or stored.image_size,
                               channels=channels)


def eval_autoencoder(args: argparse.Namespace) -> None:
    from latentdiff.metrics.reconstruction import format_table
    from latentdiff.evaluation.autoencoder import evaluate_autoencoders, stored_data_config

    for path in args.checkpoints:
        _input_file(path, "checkpoint")
    if args.samples is not None:
        check_output(args.samples, "--samples", IMAGE_OUTPUTS)
    from latentdiff.checkpoints.io import read_metadata

    stored = stored_data_config(args.checkpoints[0])
    channels = read_metadata(args.checkpoints[0]).get("autoencoder_config", {}).get("in_channels")
    data_cfg = data_config(stored, args.data, args.image_size, channels)
    changes = {"image_size": args.image_size, "holdout": args.holdout}
    data_cfg = dataclasses.replace(data_cfg, **{k: v for k, v in changes.items() if v is not None})
    rows = evaluate_autoencoders(args.checkpoints, data_cfg, device(args),
                                 args.lpips_weights, args.vgg16_weights,
                                 args.tile, args.overlap, args.samples)
    print(f"held-out {data_cfg.dataset} images at {data_cfg.image_size}px (n = {rows[0].n})")
    print(format_table(rows))
    if args.samples:
        print(f"wrote {args.samples} (originals, then one row per model)")


def _parser_of(command: str) -> argparse.ArgumentParser:
    """The parser of a subcommand (its defaults tell which options were given)."""
    from latentdiff.cli import build_parser

    commands_ = next(a for a in build_parser()._actions if a.dest == "command")
    return commands_.choices[command]


def evaluate(args: argparse.Namespace) -> None:
    """Score a model: sample quality, class accuracy, alignment over guidance scales, or
    super-resolution against bicubic (whichever fits the model, or --quality); a VQ-Diffusion
    model: alignment; a WaveDiff model: sample quality."""
    from latentdiff.checkpoints import load_latent_diffusion
    from latentdiff.evaluation import evaluate as evaluate_model
    from latentdiff.evaluation.autoencoder import stored_data_config

    if args.json is not None:
        check_output(args.json, "--json", (".json",))
    dev = device(args)
    if is_vq_diffusion(args.checkpoint):
        report = evaluate_vq(args, _parser_of(args.command), dev)
    elif is_wavediff(args.checkpoint):
        report = evaluate_wavediff(args, _parser_of(args.command), dev)
    else:
        options = _sampling(args)
        model = load_latent_diffusion(args.checkpoint, dev)
        data_cfg = data_config(stored_data_config(args.checkpoint), args.data, model.image_size,
                               model.codec.autoencoder.config.in_channels)
        report = evaluate_model(model, data_cfg, quality=args.quality,
                                seeds=tuple(range(args.seeds)), n=args.n,
                                guidance_scales=args.guidance or _default_guidances(model),
                                features=args.features,
                                inception_weights=args.inception_weights,
                                resize=args.resize, device=dev,
                                lpips_weights=args.lpips_weights,
                                vgg16_weights=args.vgg16_weights, clip=args.clip,
                                **options)
    print(report.table())
    if args.json:
        write_text(args.json, json.dumps(report.to_dict(), indent=1))
        print(f"wrote {args.json}")


def _default_guidances(model) -> list[float]:
    """`eval`'s guidance scales when none are given: 0 1 2 4 8, or a student's own scale."""
    return [0, 1, 2, 4, 8] if model.student is None else [model.student.guidance_scale]


def export(args: argparse.Namespace) -> None:
    from latentdiff.checkpoints.models import export_latent_diffusion

    check_output(args.out, "output", (".safetensors",))
    path = export_latent_diffusion(args.checkpoint, args.out, args.dtype)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")


def posthoc_ema(args: argparse.Namespace) -> None:
    from latentdiff.checkpoints.io import check_replaceable
    from latentdiff.train.posthoc_ema import write_posthoc_checkpoint

    _input_file(args.checkpoint, "checkpoint")
    out = args.out or args.checkpoint.with_name(f"ema-{args.sigma_rel:g}.safetensors")
    check_output(out, "--out", (".safetensors",))
    check_replaceable(out, args.checkpoint)
    path = write_posthoc_checkpoint(args.checkpoint, args.sigma_rel, out)
    print(f"wrote {path}: EMA σ_rel = {args.sigma_rel:g} at the checkpoint's step")


def convert(args: argparse.Namespace) -> None:
    from latentdiff.checkpoints.io import check_replaceable
    from latentdiff.checkpoints.models import save_latent_diffusion, torch_dtype
    from latentdiff.checkpoints.interop.diffusers_folder import save_diffusers

    torch_dtype(args.dtype)
    if args.dst.suffix == ".safetensors":
        check_output(args.dst, "destination", (".safetensors",))
        check_replaceable(args.dst, args.src)
    elif args.dst.suffix:
        raise UserError(f"{args.dst}: the destination must be a .safetensors file or a new "
                        "folder (diffusers)")
    else:
        check_output(args.dst, "destination", kind="new folder")
    model = _load(args, args.src, "cpu")
    if args.dst.suffix == ".safetensors":
        print(f"wrote {save_latent_diffusion(model, args.dst, args.dtype)}")
    else:
        print(f"wrote the diffusers pipeline folder {save_diffusers(model, args.dst, args.dtype)}")


def list_samplers(args: argparse.Namespace) -> None:
    from latentdiff.samplers import SAMPLERS, SPACINGS, sampler_options

    print("| name | order | NFE per step | stochastic | options | what |")
    print("|---|---|---|---|---|---|")
    for name, info in SAMPLERS.items():
        print(f"| {name} | {info.order} | {info.nfe_per_step} | "
              f"{'yes' if info.stochastic else 'no'} | {', '.join(sampler_options(name)) or '-'} | "
              f"{info.summary} |")
    print(f"grids (--spacing): {', '.join(SPACINGS)}")


def demo(args: argparse.Namespace) -> None:
    from latentdiff.demo import run_demo

    check_output(args.out, "--out", kind="folder")
    run_demo(args.out, seeds=tuple(range(args.seeds)), steps=args.steps,
             overrides=tuple(args.overrides))
