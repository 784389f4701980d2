"""Paper Tables 5 and 7 at small scale: super-resolution against bicubic upsampling, and inpainting
against a plain fill, on held-out images, over several sampling seeds.

Both tasks are scored the same way: FD between the n held-out originals (drawn at random) and the n
outputs in the data's classifier features (as rFD in `metrics/reconstruction.py`), PSNR and SSIM
against the originals (inside the holes for inpainting), beside the real-vs-real FD of the n
originals against n other real images (training split). The outputs are paired with the originals
(same content, same classes), so their FD can fall below that unpaired baseline; the autoencoder's
reconstruction (SR) is the floor an LDM can reach.

- Super-resolution: a `conditioning.kind=superres` model via `evaluate_superres`, with bicubic ×f
  and the autoencoder's reconstruction (the ceiling). Default: `ldm-emoji-sr` trained by this script
  (when runs/restoration-sr holds no finished run) on the bundled emoji model's autoencoder, so the
  report depends on committed files only.
- Inpainting: the bundled emoji text model inpaints by masked blending (it was never trained to
  inpaint), prompted with each image's caption at guidance s; masks: one to three random rectangles
  per image (the distribution the inpainting conditioner trains on). Against: each hole filled with
  the mean colour of the image's known pixels.

    python experiments/restoration.py [--superres CKPT] [--inpaint CKPT] [--n 200] [--seeds 3] [--steps 20]
                                      [--guidance 2] [--runs runs/restoration-sr] [--superres-steps 2000]
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from latentdiff.checkpoints import load_latent_diffusion, read_metadata
from latentdiff.checkpoints.models import bundled_model
from latentdiff.conditioning.spatial import paste_unmasked, random_masks
from latentdiff.data import load_dataset, split_holdout, to_model_range, to_uint8
from latentdiff.images import save_image_grid
from latentdiff.metrics.classifier import load_or_train_classifier
from latentdiff.metrics.features import state_digest
from latentdiff.metrics.frechet import FeatureStats, frechet_distance
from latentdiff.metrics.reconstruction import score_reconstructions
from latentdiff.evaluation.restoration import evaluate_superres
from latentdiff.evaluation.autoencoder import stored_data_config
from latentdiff.pipelines.generate import LatentEdit, generate
# experiments/report.py (the script's folder)
from report import REPORTS, Provenance, shown_path, write_report

TITLE = "Super-resolution and inpainting on held-out images"


def fd(features, a: torch.Tensor, b: torch.Tensor) -> float:
    """FD between two float image sets in [-1, 1] in the classifier's features."""
    return frechet_distance(*(FeatureStats.of(features(t).numpy()) for t in (a, b)))


def evaluation_data(checkpoint: Path, n: int):
    """(model, data config, held-out split in random order, classifier, real-vs-real FD of the first
    n held-out images against n training images) of a checkpoint."""
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


def train_superres(runs: Path, steps: int) -> dict:
    """`latentdiff train ldm-emoji-sr` on the bundled model's autoencoder (resumed or skipped when
    runs/ holds it); returns the command and its wall-clock time."""
    arguments = ["train", "ldm-emoji-sr", f"autoencoder={shown_path(bundled_model())}",
                 f"train.out_dir={runs}",
                 f"train.max_steps={steps}", "--resume"]
    start = time.time()
    subprocess.run([sys.executable, "-m", "latentdiff", *arguments], check=True)
    return {"command": " ".join(["latentdiff", *arguments]),
            "seconds": round(time.time() - start, 1)}


def superres_results(checkpoint: Path, args) -> dict:
    model, data_cfg, held, classifier, baseline = evaluation_data(checkpoint, args.n)
    report = evaluate_superres(model, data_cfg, seeds=range(args.seeds), n=args.n,
                               sampler="ddim", steps=args.steps)
    metadata = read_metadata(checkpoint)
    return {"checkpoint": shown_path(checkpoint), "factor": report.factor,
            "n": min(args.n, len(held)),
            "steps": args.steps, "baseline": baseline,
            "evaluator": f"classifier-{state_digest(classifier)}",
            "trained_steps": metadata.get("train_state", {}).get("step"),
            "rows": [{k: v for k, v in vars(r).items() if k in ("name", "psnr", "ssim", "rfd")}
                     for r in report.rows]}


def render_superres(r: dict) -> list[str]:
    ldm = [row for row in r["rows"] if row["name"].startswith("LDM-SR")]
    rest = [row for row in r["rows"] if not row["name"].startswith("LDM-SR")]
    training = r.get("training") or {}
    trained = (f" Trained {r['trained_steps']} steps by `{training['command']}` "
               f"({training['seconds'] / 60:.1f} min in this run)." if training.get("seconds")
               else f" Trained {r['trained_steps']} steps.")
    return [f"## Super-resolution ×{r['factor']} (`{r['checkpoint']}`)", "",
            (f"{r['n']} held-out images; DDIM {r['steps']} steps; {len(ldm)} seeds. Real-vs-real "
             f"FD (the {r['n']} originals vs {r['n']} training images): "
             f"{r['baseline']:.2f}.{trained} Evaluator `{r['evaluator']}`."), "",
            "| method | PSNR | SSIM | FD to originals |", "|---|---|---|---|",
            (f"| LDM-SR (mean ± sd over seeds) | {mean_sd([x['psnr'] for x in ldm])} | "
             f"{mean_sd([x['ssim'] for x in ldm])} | {mean_sd([x['rfd'] for x in ldm])} |"),
            *(f"| {x['name']} | {x['psnr']:.2f} | {x['ssim']:.3f} | "
              f"{x['rfd']:.2f} |" for x in rest), ""]


def hole_psnr(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean over images of the PSNR (peak-to-peak 2) of the masked pixels only."""
    mse = ((x - y).pow(2) * mask).flatten(1).sum(1) / (mask.flatten(1).sum(1) * x.shape[1])
    return (10 * torch.log10(4.0 / mse)).mean().item()


def mean_fill(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each hole filled with the mean colour of its image's known pixels."""
    known = 1 - mask
    colour = (x * known).sum((2, 3), keepdim=True) / known.sum((2, 3), keepdim=True).clamp(min=1)
    return x * known + colour * mask


def inpainting_results(checkpoint: Path, args) -> dict:
    """Scores per seed and of the plain fills; writes the grid of originals, inputs and results."""
    model, _, held, classifier, baseline = evaluation_data(checkpoint, args.n)
    n = min(args.n, len(held))
    originals = held.images[:n]
    x = to_model_range(originals)
    masks = random_masks(n, x.shape[-1], torch.Generator().manual_seed(0))
    side = x.shape[-1] // model.codec.downsampling_factor
    edit = LatentEdit(model.codec.encode(x), 1.0, F.adaptive_max_pool2d(masks, side))
    conditioner = model.conditioner
    prompts = None if conditioner is None else conditioner.training_inputs(held, torch.arange(n))
    guidance = args.guidance if model.trained_with_null else 1.0
    seeds, outputs = [], []
    for seed in range(args.seeds):
        out = generate(model, [seed * n + i for i in range(n)], prompts=prompts,
                       guidance_scale=guidance,
                       sampler="ddim", steps=args.steps, edit=edit)
        outputs.append(to_model_range(paste_unmasked(originals, to_uint8(out), masks)))
        scores = score_reconstructions(x, outputs[-1], classifier.features)
        seeds.append({"rfd": scores["rfd"], "hole_psnr": hole_psnr(x, outputs[-1], masks),
                      "ssim": scores["ssim"]})
    filled = mean_fill(x, masks)
    fill = score_reconstructions(x, filled, classifier.features)
    # holes shown white
    shown = [x[:8], (x * (1 - masks) + masks)[:8], *(r[:8] for r in outputs), filled[:8]]
    save_image_grid(to_uint8(torch.cat(shown)), REPORTS / "restoration" / "inpainting.png", ncols=8)
    return {"checkpoint": shown_path(checkpoint), "guidance": guidance, "n": n, "steps": args.steps,
            "mask_fraction": masks.mean().item(), "baseline": baseline,
            "evaluator": f"classifier-{state_digest(classifier)}", "seeds": seeds,
            "mean_fill": {"rfd": fill["rfd"],
                          "hole_psnr": hole_psnr(x, filled, masks), "ssim": fill["ssim"]},
            "masked_input_rfd": fd(classifier.features, x, x * (1 - masks) - masks)}


def render_inpainting(r: dict) -> list[str]:
    s, fill = r["seeds"], r["mean_fill"]
    return [f"## Inpainting (`{r['checkpoint']}`, masked blending, guidance {r['guidance']:g})", "",
            (f"{r['n']} held-out images, one mask each (1-3 random rectangles, "
             f"{r['mask_fraction']:.0%} of the pixels on average); DDIM {r['steps']} steps; "
             f"{len(s)} seeds. Real-vs-real FD (the {r['n']} originals vs {r['n']} training "
             f"images): {r['baseline']:.2f}. Evaluator `{r['evaluator']}`."), "",
            "| method | FD to originals | PSNR in the holes | SSIM |", "|---|---|---|---|",
            (f"| LDM (mean ± sd over seeds) | {mean_sd([x['rfd'] for x in s])} | "
             f"{mean_sd([x['hole_psnr'] for x in s])} | {np.mean([x['ssim'] for x in s]):.3f} |"),
            f"| mean-colour fill | {fill['rfd']:.2f} | {fill['hole_psnr']:.2f} | "
            f"{fill['ssim']:.3f} |",
            f"| masked input (holes black) | {r['masked_input_rfd']:.2f} | – | – |", "",
            "Rows of the grid: originals, masked inputs (holes white), the LDM's results for "
            "each seed, the mean-colour fill."]


def render(results: dict) -> list[str]:
    """The report's body from its raw results."""
    head = (render_superres(results["superres"]) if results["superres"] else
            ["(super-resolution skipped: no checkpoint given)", ""])
    return head + render_inpainting(results["inpainting"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--superres", type=Path, default=None,
                   help="default: train ldm-emoji-sr into --runs")
    p.add_argument("--runs", type=Path, default=Path("runs/restoration-sr"))
    p.add_argument("--superres-steps", type=int, default=2000,
                   help="training steps of the default SR model")
    p.add_argument("--inpaint", type=Path, default=None,
                   help="default: the bundled emoji text model")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=2.0,
                   help="for text models (2: the best of reports/cfg-sweep)")
    args = p.parse_args()
    provenance = Provenance()
    training = None
    if args.superres is None:
        training = train_superres(args.runs, args.superres_steps)
        args.superres = args.runs / "checkpoints" / "last.safetensors"
    results = {"superres": {**superres_results(args.superres, args), "training": training},
               "inpainting": inpainting_results(args.inpaint or bundled_model(), args)}
    print(write_report("restoration", TITLE, results, render, provenance,
                       images=("inpainting.png",)))


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
