"""Paper Tables 5 and 7 at small scale: super-resolution against bicubic upsampling, and inpainting against a plain
fill, on held-out images, over several sampling seeds.

Both tasks are scored the same way: FD between the n held-out originals (drawn at random) and the n outputs in the
data's classifier features (as rFD in `metrics/reconstruction.py`), PSNR and SSIM against the originals (inside the
holes for inpainting), beside the real-vs-real FD of the n originals against n other real images (training split).
The outputs are paired with the originals (same content, same classes), so their FD can fall below that unpaired
baseline; the autoencoder's reconstruction (SR) is the floor an LDM can reach.

- Super-resolution: a `conditioning.kind=superres` model (default runs/ldm-emoji-sr, `latentdiff train
  ldm-emoji-sr`) via `evaluate_superres`, with bicubic ×f and the autoencoder's reconstruction (the ceiling).
- Inpainting: the bundled emoji text model inpaints by masked blending (it was never trained to inpaint), prompted
  with each image's caption at guidance s; masks: one to three random rectangles per image (the distribution the
  inpainting conditioner trains on). Against: each hole filled with the mean colour of the image's known pixels.

    python experiments/restoration.py [--superres CKPT] [--inpaint CKPT] [--n 200] [--seeds 3] [--steps 20]
                                      [--guidance 2]
"""

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from latentdiff.checkpoints import load_latent_diffusion
from latentdiff.checkpoints.models import bundled_model
from latentdiff.data import load_dataset, split_holdout, to_model_range, to_uint8
from latentdiff.metrics.classifier import load_or_train_classifier
from latentdiff.metrics.frechet import FeatureStats, frechet_distance
from latentdiff.metrics.reconstruction import score_reconstructions
from latentdiff.metrics.restoration import evaluate_superres
from latentdiff.conditioning.spatial import paste_unmasked
from latentdiff.images import save_image_grid
from latentdiff.pipelines.eval_autoencoder import stored_data_config
from latentdiff.pipelines.generate import LatentEdit, generate
from latentdiff.train.conditions import random_masks, token_inputs
from report import REPORTS, shown_path, write_report  # experiments/report.py (the script's folder is on sys.path)


def fd(features, a: torch.Tensor, b: torch.Tensor) -> float:
    """FD between two float image sets in [-1, 1] in the classifier's features."""
    return frechet_distance(*(FeatureStats.of(features(t).numpy()) for t in (a, b)))


def evaluation_data(checkpoint: Path, n: int):
    """(model, data config, held-out split in random order, classifier, real-vs-real FD of the first n held-out
    images against n training images) of a checkpoint."""
    model = load_latent_diffusion(checkpoint)
    data_cfg = stored_data_config(checkpoint)
    train, held = split_holdout(load_dataset(data_cfg), data_cfg.holdout, data_cfg.split_seed)
    classifier, _ = load_or_train_classifier(data_cfg, split=(train, held))
    held = held.sample(len(held))  # held-out data may be ordered (the emoji by Unicode group)
    n = min(n, len(held))
    others = train.images[torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:n]]
    baseline = fd(classifier.features, to_model_range(held.images[:n]), to_model_range(others))
    return model, data_cfg, held, classifier, baseline


def mean_sd(values: list[float]) -> str:
    return f"{np.mean(values):.2f} ± {np.std(values):.2f}"


def superres_section(checkpoint: Path, args) -> list[str]:
    model, data_cfg, held, _, baseline = evaluation_data(checkpoint, args.n)
    report = evaluate_superres(model, data_cfg, seeds=range(args.seeds), n=args.n, sampler="ddim", steps=args.steps)
    n = min(args.n, len(held))
    ldm = [r for r in report.rows if r.name.startswith("LDM-SR")]
    rest = [r for r in report.rows if not r.name.startswith("LDM-SR")]
    return [f"## Super-resolution ×{report.factor} (`{shown_path(checkpoint)}`)", "",
            (f"{n} held-out images; DDIM {args.steps} steps; {len(ldm)} seeds. Real-vs-real FD (the {n} originals vs "
             f"{n} training images): {baseline:.2f}."), "",
            "| method | PSNR | SSIM | FD to originals |", "|---|---|---|---|",
            (f"| LDM-SR (mean ± sd over seeds) | {mean_sd([r.psnr for r in ldm])} | {mean_sd([r.ssim for r in ldm])} | "
             f"{mean_sd([r.rfd for r in ldm])} |"),
            *(f"| {r.name} | {r.psnr:.2f} | {r.ssim:.3f} | {r.rfd:.2f} |" for r in rest), ""]


def hole_psnr(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean over images of the PSNR (peak-to-peak 2) of the masked pixels only."""
    mse = ((x - y).pow(2) * mask).flatten(1).sum(1) / (mask.flatten(1).sum(1) * x.shape[1])
    return (10 * torch.log10(4.0 / mse)).mean().item()


def mean_fill(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each hole filled with the mean colour of its image's known pixels."""
    known = 1 - mask
    colour = (x * known).sum((2, 3), keepdim=True) / known.sum((2, 3), keepdim=True).clamp(min=1)
    return x * known + colour * mask


def inpainting_section(checkpoint: Path, args) -> list[str]:
    model, _, held, classifier, baseline = evaluation_data(checkpoint, args.n)
    n = min(args.n, len(held))
    originals = held.images[:n]
    x = to_model_range(originals)
    masks = random_masks(n, x.shape[-1], torch.Generator().manual_seed(0))
    side = x.shape[-1] // model.codec.downsampling_factor
    edit = LatentEdit(model.codec.encode(x), 1.0, F.adaptive_max_pool2d(masks, side))
    prompts = token_inputs(model.conditioner, held, torch.arange(n)) if model.conditioner is not None else None
    guidance = args.guidance if model.trained_with_null else 1.0
    rows, results = [], []
    for seed in range(args.seeds):
        out = generate(model, [seed * n + i for i in range(n)], prompts=prompts, guidance_scale=guidance,
                       sampler="ddim", steps=args.steps, edit=edit)
        results.append(to_model_range(paste_unmasked(originals, to_uint8(out), masks)))
        scores = score_reconstructions(x, results[-1], classifier.features)
        rows.append((scores["rfd"], hole_psnr(x, results[-1], masks), scores["ssim"]))
    filled = mean_fill(x, masks)
    fill = score_reconstructions(x, filled, classifier.features)
    shown = [x[:8], (x * (1 - masks) + masks)[:8], *(r[:8] for r in results), filled[:8]]  # holes shown white
    grid = save_image_grid(to_uint8(torch.cat(shown)), REPORTS / "restoration" / "inpainting.png", ncols=8)
    return [f"## Inpainting (`{shown_path(checkpoint)}`, masked blending, guidance {guidance:g})", "",
            (f"{n} held-out images, one mask each (1-3 random rectangles, {masks.mean().item():.0%} of the pixels on "
             f"average); DDIM {args.steps} steps; {args.seeds} seeds. Real-vs-real FD (the {n} originals vs {n} "
            f"training images): {baseline:.2f}."), "",
            "| method | FD to originals | PSNR in the holes | SSIM |", "|---|---|---|---|",
            (f"| LDM (mean ± sd over seeds) | {mean_sd([r[0] for r in rows])} | {mean_sd([r[1] for r in rows])} | "
             f"{np.mean([r[2] for r in rows]):.3f} |"),
            (f"| mean-colour fill | {fill['rfd']:.2f} | {hole_psnr(x, filled, masks):.2f} | {fill['ssim']:.3f} |"),
            f"| masked input (holes black) | {fd(classifier.features, x, x * (1 - masks) - masks):.2f} | – | – |", "",
            "Rows: originals, masked inputs (holes white), the LDM's results for each seed, the mean-colour fill.", "",
            f"![inpainting]({grid.name})", ""]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--superres", type=Path, default=Path("runs/ldm-emoji-sr/checkpoints/last.safetensors"))
    p.add_argument("--inpaint", type=Path, default=None, help="default: the bundled emoji text model")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=2.0, help="for text models (2: the best of reports/cfg-sweep)")
    args = p.parse_args()
    body = []
    if args.superres.is_file():
        body += superres_section(args.superres, args)
    else:
        body += [(f"(super-resolution skipped: no checkpoint at {args.superres}; train one with `latentdiff train "
                 f"ldm-emoji-sr` or give --superres)"), ""]
    body += inpainting_section(args.inpaint or bundled_model(), args)
    print(write_report("restoration", "Super-resolution and inpainting on held-out images", body, plot=False))


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
