"""`latentdiff sample` and `eval` when the checkpoint is a WaveDiff model: its T-step chain
(--steps, if given, must be T); sample quality (FD, KID, …) against the training split. The latent
model's other options do not apply to it and are refused by name."""

import argparse

from latentdiff.cli.vq_diffusion import COMMON, checkpoint_kind, refuse_others

APPLIES = {"sample": COMMON | {"seed", "out"},
           "eval": COMMON | {"seeds", "data", "json", "quality", "features", "inception_weights",
                             "resize"}}


def is_wavediff(checkpoint) -> bool:
    from latentdiff.checkpoints.models import WAVEDIFF

    return checkpoint_kind(checkpoint) == WAVEDIFF


def sample_wavediff(args: argparse.Namespace, sample_parser: argparse.ArgumentParser,
                    dev: str) -> None:
    """The square image grid of `sample` from a WaveDiff checkpoint."""
    from latentdiff.checkpoints.wavediff import load_wavediff
    from latentdiff.data import to_uint8
    from latentdiff.files import check_output
    from latentdiff.images import IMAGE_OUTPUTS, save_image_grid
    from latentdiff.pipelines.grid import sample_grid
    from latentdiff.pipelines.wavediff import generate_wavediff

    refuse_others(args, sample_parser, APPLIES, "WaveDiff")
    check_output(args.out, "--out", IMAGE_OUTPUTS)
    model = load_wavediff(args.checkpoint, dev)
    grid = sample_grid(None, args.seed, args.n, None, None, None)
    images = generate_wavediff(model, grid.seeds, steps=args.steps,
                               guidance_scale=1.0 if args.guidance is None else args.guidance)
    path = save_image_grid(to_uint8(images), args.out, grid.ncols)
    print(f"wrote {path} ({len(grid.seeds)} images)")


def evaluate_wavediff(args: argparse.Namespace, eval_parser: argparse.ArgumentParser, dev: str):
    """The `eval` report of a WaveDiff model: sample quality over --seeds against the training
    split (`evaluation.sample_quality`), with its real-vs-real baseline."""
    from latentdiff.checkpoints.wavediff import load_wavediff
    from latentdiff.cli.commands import data_config
    from latentdiff.evaluation.autoencoder import stored_data_config
    from latentdiff.evaluation.sample_quality import evaluate_checkpoint_quality

    refuse_others(args, eval_parser, APPLIES, "WaveDiff")
    model = load_wavediff(args.checkpoint, dev)
    data_cfg = data_config(stored_data_config(args.checkpoint), args.data, model.image_size,
                           model.codec.autoencoder.config.in_channels)
    return evaluate_checkpoint_quality(model, data_cfg, args.features, args.inception_weights,
                                       args.resize, dev, args.n, tuple(range(args.seeds)),
                                       steps=args.steps)
