"""Frido's coarse-to-fine denoising against the plain latent diffusion model on the same feature-pyramid
first stage (shapes, layout-to-image): box IoU and FD over training, ≥ 2 training seeds.

First stage: `ae-kl-f4-shapes` with model.pyramid_levels=2 (3×32×32 → 4×8×8 latents in two levels
of 2 channels: a coarse one at 4×4, a fine one at 8×8). Models, each trained --steps steps with a
checkpoint kept at every half, training seeds 1 … --seeds, both `ldm-shapes-layout`:
- LDM: the plain model on the whole pyramid latent (unet.in_channels = out_channels = 4);
- Frido: coarse_to_fine.enabled (one level per stage, the coarse level first; unet.in_channels = 2
  + 4 + 2, out_channels = 2).
Every kept checkpoint is scored as `latentdiff eval` scores a layout model (`evaluation.alignment`):
the first --n held-out layouts, one sample each, guidance --guidance, DDIM; the shapes checker's mean
box IoU and FD in the shapes classifier's features against the training split, with real-vs-real
and shuffled baselines. Frido runs --sample-steps steps per stage (2 × as many network evaluations);
the LDM is scored at --sample-steps and at twice as many, so one of its rows matches Frido's
evaluations. Time: the training-loop minutes each run's log gives up to that checkpoint.

    python experiments/frido.py          # → reports/frido-shapes
"""

import argparse
import math
from pathlib import Path

import numpy as np
import torch

from latentdiff.checkpoints import load_latent_diffusion
from latentdiff.config import AutoencoderTrainConfig, LatentDiffusionTrainConfig, load_config
from latentdiff.evaluation.alignment import AlignmentReport, evaluate_alignment
from latentdiff.evaluation.autoencoder import stored_data_config
from latentdiff.train.autoencoder import train_autoencoder
from latentdiff.train.diffusion import train_latent_diffusion
# experiments/ (the script's folder)
from few_step import run_minutes
from guidance_family import trained
from report import Provenance, mean_sd, shown_path, write_report

TITLE = "Frido's coarse-to-fine denoising against the plain LDM on one pyramid first stage (shapes, layouts)"
ARMS = {  # name → (overrides of ldm-shapes-layout, evaluations per sampling step)
    "LDM": (["unet.in_channels=4", "unet.out_channels=4"], 1),
    "Frido": (["coarse_to_fine.enabled=true", "unet.in_channels=8", "unet.out_channels=2"], 2),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1000, help="training steps of every model")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--n", type=int, default=200, help="held-out layouts scored")
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument("--sample-steps", type=int, default=20, help="DDIM steps (per stage)")
    p.add_argument("--autoencoder-steps", type=int, default=800)
    p.add_argument("--root", type=Path, default=Path("runs/frido-shapes"))
    p.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    p.add_argument("--last-only", action="store_true",
                   help="score only the last checkpoint of each run (not the half-way one)")
    p.add_argument("--train-only", action="store_true",
                   help="train the models and stop (another process may train the others)")
    p.add_argument("--report", default="frido-shapes")
    args = p.parse_args()
    provenance = Provenance()
    ae = trained(load_config(AutoencoderTrainConfig, "ae-kl-f4-shapes", [
        "model.pyramid_levels=2", f"train.max_steps={args.autoencoder_steps}",
        f"train.out_dir={args.root / 'autoencoder'}"]), train_autoencoder)
    every = args.steps // 2
    rows = []
    for name in args.arms:
        overrides, per_step = ARMS[name]
        runs = []
        for seed in range(1, args.seeds + 1):
            cfg = load_config(LatentDiffusionTrainConfig, "ldm-shapes-layout", [
                f"autoencoder={ae}", *overrides, f"train.max_steps={2 * every}",
                f"train.seed={seed}", f"train.checkpoint_every={every}",
                "train.keep_checkpoints=true", f"train.log_every={math.gcd(25, every)}",
                f"train.sample_every={2 * every}", f"train.out_dir={args.root / name.lower()}-s{seed}"])
            last = trained(cfg, train_latent_diffusion)
            if args.train_only:
                continue
            points = []
            for step in (2 * every,) if args.last_only else (every, 2 * every):
                checkpoint = last.parent / f"step-{step:07d}.safetensors"
                model = load_latent_diffusion(checkpoint)
                for steps in (args.sample_steps,) if per_step > 1 else (args.sample_steps,
                                                                         2 * args.sample_steps):
                    with torch.no_grad():
                        report = evaluate_alignment(model, stored_data_config(checkpoint),
                                                    (args.guidance,), n=args.n, sampler="ddim",
                                                    steps=steps)
                    points.append({"step": step, "sample_steps": steps,
                                   "evaluations": per_step * steps,
                                   "minutes": run_minutes(last.parent.parent, step),
                                   "report": report.to_dict()})
                    print(name, seed, step, steps, report.table(), flush=True)
            runs.append({"seed": seed, "run": shown_path(last), "points": points})
        rows.append({"model": name, "seeds": runs})
    if args.train_only:
        return
    results = {"steps": 2 * every, "n": args.n, "guidance": args.guidance,
               "sample_steps": args.sample_steps, "autoencoder": shown_path(ae), "rows": rows}
    print(write_report(args.report, TITLE, results, render, provenance, plot=plot))


def cells(row: dict) -> dict[tuple[int, int], list[dict]]:
    """{(training step, sampling steps): [that point of every seed]} of one model's row."""
    out = {}
    for run in row["seeds"]:
        for point in run["points"]:
            out.setdefault((point["step"], point["sample_steps"]), []).append(point)
    return out


def render(results: dict) -> list[str]:
    first = AlignmentReport.from_dict(results["rows"][0]["seeds"][0]["points"][0]["report"])
    lines = [f"Shapes, layout-to-image, on one KL-f4 autoencoder with a 2-level feature pyramid "
             f"(`{results['autoencoder']}`); {len(results['rows'][0]['seeds'])} training seeds, "
             f"mean ± sd. The first {results['n']} held-out layouts, one sample each, DDIM, guidance "
             f"{results['guidance']:g}. {first.metric}: real held-out images {first.real:.3f}, "
             f"shuffled layouts {first.shuffled:.3f}; FD real-vs-real {first.fd_baseline:.2f}.", "",
             "| model | training step | training minutes | sampling steps | network evaluations "
             "| box IoU | FD |", "|---|---|---|---|---|---|---|"]
    for row in results["rows"]:
        for (step, steps), points in cells(row).items():
            reports = [AlignmentReport.from_dict(p["report"]) for p in points]
            lines.append(f"| {row['model']} | {step} | "
                         f"{np.mean([p['minutes'] for p in points]):.1f} | {steps} | "
                         f"{points[0]['evaluations']} | "
                         f"{mean_sd([r.rows[0].alignment[0] for r in reports], 3)} | "
                         f"{mean_sd([r.rows[0].fd[0] for r in reports], 1)} |")
    return lines


def plot(plt, results: dict):
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for row in results["rows"]:
        by_steps = {}
        for (step, steps), points in cells(row).items():
            by_steps.setdefault(steps, []).append((
                np.mean([p["minutes"] for p in points]),
                np.mean([p["report"]["rows"][0]["alignment"][0] for p in points]),
                np.mean([p["report"]["rows"][0]["fd"][0] for p in points])))
        for steps, curve in by_steps.items():
            minutes, iou, fd = zip(*sorted(curve))
            label = f"{row['model']}, {steps} steps"
            axes[0].plot(minutes, iou, marker="o", label=label)
            axes[1].plot(minutes, fd, marker="o", label=label)
    axes[0].set_ylabel("mean box IoU (shapes checker)")
    axes[1].set_ylabel("FD (shapes classifier features)")
    for ax in axes:
        ax.set_xlabel("training-loop minutes")
        ax.legend(fontsize=8)
    fig.suptitle(TITLE, fontsize=9)
    return fig


if __name__ == "__main__":
    main()
