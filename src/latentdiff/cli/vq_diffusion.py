"""`latentdiff sample` and `eval` when the checkpoint is a VQ-Diffusion model: the reverse process
over its codes, with --prompt or --class, --steps and --guidance; its text or layout alignment over
guidance scales. The latent model's other options do not apply to it and are refused by name."""

import argparse

from latentdiff.errors import UserError

# what `sample` and `eval` options mean for a VQ-Diffusion model (the rest are the latent model's)
COMMON = {"checkpoint", "n", "steps", "guidance", "device", "no_verify", "func", "command"}
APPLIES = {"sample": COMMON | {"prompt", "class_label", "seed", "out"},
           "eval": COMMON | {"seeds", "data", "clip", "json"}}


def refuse_others(args: argparse.Namespace, parser: argparse.ArgumentParser,
                  applies: dict[str, set[str]], system: str) -> None:
    """A one-line error for any option given that does not apply to `system` (the options
    `applies[command]` and COMMON do)."""
    for dest, value in vars(args).items():
        if dest not in applies[args.command] and value != parser.get_default(dest):
            own = sorted(f"--{d.replace('_', '-')}" for d in applies[args.command] - COMMON)
            raise UserError(f"--{dest.replace('_', '-')} does not apply to a {system} model "
                            f"(`{args.command}` takes {', '.join(own)}, --n, --steps and "
                            "--guidance); leave it out")


def checkpoint_kind(checkpoint) -> str | None:
    """The kind a latentdiff checkpoint's metadata names (None: no checkpoint, or another
    tool's)."""
    from latentdiff.checkpoints.io import KIND, read_metadata
    from latentdiff.checkpoints.load import is_latentdiff_checkpoint

    if checkpoint is None or not is_latentdiff_checkpoint(checkpoint):
        return None
    return read_metadata(checkpoint).get(KIND)


def is_vq_diffusion(checkpoint) -> bool:
    from latentdiff.checkpoints.models import VQ_DIFFUSION

    return checkpoint_kind(checkpoint) == VQ_DIFFUSION


def sample_vq(args: argparse.Namespace, sample_parser: argparse.ArgumentParser, dev: str) -> None:
    """The image grid of `sample` (one row per prompt or class, or a square grid) from a
    VQ-Diffusion checkpoint; default 50 steps (at most the model's T), guidance 1."""
    from latentdiff.checkpoints.vq_diffusion import load_vq_diffusion
    from latentdiff.data import to_uint8
    from latentdiff.images import IMAGE_OUTPUTS, save_image_grid
    from latentdiff.files import check_output
    from latentdiff.pipelines.grid import sample_grid
    from latentdiff.pipelines.vq_diffusion import generate_vq

    refuse_others(args, sample_parser, APPLIES, "VQ-Diffusion")
    check_output(args.out, "--out", IMAGE_OUTPUTS)
    model = load_vq_diffusion(args.checkpoint, dev)
    grid = sample_grid(model.num_classes, args.seed, args.n, args.prompt, None, args.class_label)
    images = generate_vq(model, grid.seeds, steps=args.steps or min(50, model.schedule.T),
                         guidance_scale=1.0 if args.guidance is None else args.guidance,
                         **{k: v for k, v in dict(grid.conditions).items() if v is not None})
    path = save_image_grid(to_uint8(images), args.out, grid.ncols)
    print(f"wrote {path} ({len(grid.seeds)} images)")


def evaluate_vq(args: argparse.Namespace, eval_parser: argparse.ArgumentParser, dev: str):
    """The `eval` report of a VQ-Diffusion text or layout model: `evaluation.alignment` (caption or
    layout match and FD over guidance scales, with its real-vs-real and shuffled baselines), the
    reverse process at --steps (default min(50, T))."""
    from latentdiff.checkpoints.vq_diffusion import load_vq_diffusion
    from latentdiff.cli.commands import data_config
    from latentdiff.evaluation.alignment import evaluate_alignment
    from latentdiff.evaluation.autoencoder import stored_data_config
    from latentdiff.metrics.clip_score import ClipScorer

    refuse_others(args, eval_parser, APPLIES, "VQ-Diffusion")
    model = load_vq_diffusion(args.checkpoint, dev)
    data_cfg = data_config(stored_data_config(args.checkpoint), args.data, model.image_size,
                           model.autoencoder.config.in_channels)
    return evaluate_alignment(model, data_cfg, args.guidance or [0, 1, 2, 4, 8],
                              tuple(range(args.seeds)), args.n,
                              None if args.clip is None else ClipScorer(args.clip, dev),
                              steps=args.steps or min(50, model.schedule.T))
