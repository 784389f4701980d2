"""`latentdiff sample CHECKPOINT` when CHECKPOINT is a VQ-Diffusion model: the reverse process over
its codes, with --prompt or --class, --steps and --guidance; the latent model's other options do
not apply to it and are refused by name."""

import argparse

from latentdiff.errors import UserError

# what `sample` options mean for a VQ-Diffusion model (the rest are the latent model's)
APPLIES = {"checkpoint", "prompt", "class_label", "n", "seed", "out", "steps", "guidance", "device",
           "no_verify", "func", "command"}


def is_vq_diffusion(checkpoint) -> bool:
    from latentdiff.checkpoints.io import KIND, read_metadata
    from latentdiff.checkpoints.load import is_latentdiff_checkpoint
    from latentdiff.checkpoints.models import VQ_DIFFUSION

    return (checkpoint is not None and is_latentdiff_checkpoint(checkpoint)
            and read_metadata(checkpoint)[KIND] == VQ_DIFFUSION)


def sample_vq(args: argparse.Namespace, sample_parser: argparse.ArgumentParser, dev: str) -> None:
    """The image grid of `sample` (one row per prompt or class, or a square grid) from a
    VQ-Diffusion checkpoint; default 50 steps (at most the model's T), guidance 1."""
    from latentdiff.checkpoints.vq_diffusion import load_vq_diffusion
    from latentdiff.data import to_uint8
    from latentdiff.images import IMAGE_OUTPUTS, save_image_grid
    from latentdiff.files import check_output
    from latentdiff.pipelines.grid import sample_grid
    from latentdiff.pipelines.vq_diffusion import generate_vq

    for dest, value in vars(args).items():
        if dest not in APPLIES and value != sample_parser.get_default(dest):
            flag = "--" + dest.replace("_", "-")
            raise UserError(f"{flag} does not apply to a VQ-Diffusion model (it takes --prompt or "
                            "--class, --steps and --guidance); leave it out")
    check_output(args.out, "--out", IMAGE_OUTPUTS)
    model = load_vq_diffusion(args.checkpoint, dev)
    grid = sample_grid(model.num_classes, args.seed, args.n, args.prompt, None, args.class_label)
    images = generate_vq(model, grid.seeds, steps=args.steps or min(50, model.schedule.T),
                         guidance_scale=1.0 if args.guidance is None else args.guidance,
                         **{k: v for k, v in dict(grid.conditions).items() if v is not None})
    path = save_image_grid(to_uint8(images), args.out, grid.ncols)
    print(f"wrote {path} ({len(grid.seeds)} images)")
