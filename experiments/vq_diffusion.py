"""VQ-Diffusion against the continuous latent diffusion model on the same VQ-f4 first stage (shapes,
text-to-image): caption alignment and FD over training time, ≥ 2 training seeds.

First stage: `ae-vq-f4-shapes` (3×32×32 → 8×8 codes of 256). Models, each trained --steps steps with
checkpoints kept at every quarter, training seeds 1 … --seeds:
- VQ-Diffusion: `vq-diffusion-shapes` (a 6-block DiT over the codes, τ_θ through cross-attention,
  T = 100, 10 % of captions dropped);
- LDM: `ldm-shapes-text` on the same autoencoder's pre-quantisation latents (its decoder quantises).
Every kept checkpoint is scored as `latentdiff eval` scores a text model (`evaluation.alignment`): the
first --n held-out captions, one sample each, at each --guidance; the shapes checker's caption match
and FD in the shapes classifier's features against the training split, with real-vs-real and
shuffled baselines. Sampling: --sample-steps reverse steps for both (VQ-Diffusion: of its T = 100;
LDM: DDIM). Time: the training-loop minutes each run's log gives up to that checkpoint.

    python experiments/vq_diffusion.py          # → reports/vq-diffusion-shapes
"""

import argparse
import math
from pathlib import Path

import numpy as np
import torch

from latentdiff.checkpoints import load_latent_diffusion
from latentdiff.checkpoints.vq_diffusion import load_vq_diffusion
from latentdiff.config import AutoencoderTrainConfig, LatentDiffusionTrainConfig, load_config
from latentdiff.config_systems import VQDiffusionTrainConfig
from latentdiff.evaluation.alignment import AlignmentReport, evaluate_alignment
from latentdiff.evaluation.autoencoder import stored_data_config
from latentdiff.train.autoencoder import train_autoencoder
from latentdiff.train.diffusion import train_latent_diffusion
from latentdiff.train.vq_diffusion import train_vq_diffusion
# experiments/ (the script's folder)
from few_step import run_minutes
from guidance_family import trained
from report import Provenance, mean_sd, shown_path, write_report

TITLE = "VQ-Diffusion against the continuous LDM on the same VQ-f4 first stage (shapes, text)"
MODELS = {  # name → (config class, bundled config, trainer, loader, sampling options)
    "VQ-Diffusion": (VQDiffusionTrainConfig, "vq-diffusion-shapes", train_vq_diffusion,
                     load_vq_diffusion, {}),
    "LDM": (LatentDiffusionTrainConfig, "ldm-shapes-text", train_latent_diffusion,
            load_latent_diffusion, {"sampler": "ddim"}),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=4000, help="training steps of every model")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--n", type=int, default=200, help="held-out captions scored")
    p.add_argument("--guidance", type=float, nargs="+", default=[1.0, 3.0])
    p.add_argument("--sample-steps", type=int, default=50)
    p.add_argument("--root", type=Path, default=Path("runs/vq-diffusion-shapes"))
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    p.add_argument("--last-only", action="store_true",
                   help="score only the last checkpoint of each run (not every quarter)")
    p.add_argument("--train-only", action="store_true",
                   help="train the models and stop (another process may train the others)")
    p.add_argument("--report", default="vq-diffusion-shapes")
    args = p.parse_args()
    provenance = Provenance()
    ae = trained(load_config(AutoencoderTrainConfig, "ae-vq-f4-shapes",
                             [f"train.out_dir={args.root / 'autoencoder'}"]), train_autoencoder)
    every = args.steps // 4
    rows = []
    for name in args.models:
        config_class, config, train, load, options = MODELS[name]
        row = {"model": name, "seeds": []}
        for seed in range(1, args.seeds + 1):
            cfg = load_config(config_class, config, [
                f"autoencoder={ae}", f"train.max_steps={4 * every}", f"train.seed={seed}",
                f"train.checkpoint_every={every}", "train.keep_checkpoints=true",
                # a log line (with its time) at every kept checkpoint
                f"train.log_every={math.gcd(25, every)}",
                f"train.out_dir={args.root / name.lower()}-s{seed}"])
            last = trained(cfg, train)
            if args.train_only:
                continue
            points = []
            for step in range(4 * every if args.last_only else every, 4 * every + 1, every):
                checkpoint = last.parent / f"step-{step:07d}.safetensors"
                with torch.no_grad():
                    report = evaluate_alignment(load(checkpoint), stored_data_config(checkpoint),
                                                args.guidance, n=args.n, steps=args.sample_steps,
                                                **options)
                points.append({"step": step, "minutes": run_minutes(last.parent.parent, step),
                               "report": report.to_dict()})
                print(name, seed, step, report.table(), flush=True)
            row["seeds"].append({"seed": seed, "run": shown_path(last), "points": points})
        rows.append(row)
    if args.train_only:
        return
    results = {"steps": 4 * every, "n": args.n, "guidance": args.guidance,
               "sample_steps": args.sample_steps, "autoencoder": shown_path(ae), "rows": rows}
    print(write_report(args.report, TITLE, results, render, provenance, plot=plot))


def _reports(row: dict, step: int) -> list[AlignmentReport]:
    return [AlignmentReport.from_dict(next(p for p in s["points"] if p["step"] == step)["report"])
            for s in row["seeds"]]


def render(results: dict) -> list[str]:
    first = AlignmentReport.from_dict(results["rows"][0]["seeds"][0]["points"][0]["report"])
    g = results["guidance"]
    lines = [f"Shapes, text-to-image, on the same VQ-f4 autoencoder (`{results['autoencoder']}`); "
             f"{len(results['rows'][0]['seeds'])} training seeds, mean ± sd. The first "
             f"{results['n']} held-out captions, one sample each, {results['sample_steps']} "
             f"sampling steps. {first.metric}: real held-out images {first.real:.3f}, shuffled "
             f"captions {first.shuffled:.3f}; FD real-vs-real {first.fd_baseline:.2f}.", "",
             "| model | step | training minutes | "
             + " | ".join(f"alignment s = {s:g}" for s in g) + " | "
             + " | ".join(f"FD s = {s:g}" for s in g) + " |",
             "|---|---|---|" + "---|" * (2 * len(g))]
    for row in results["rows"]:
        for point in row["seeds"][0]["points"]:
            step = point["step"]
            reports = _reports(row, step)
            minutes = [next(p for p in s["points"] if p["step"] == step)["minutes"]
                       for s in row["seeds"]]
            cells = [mean_sd([r.rows[i].alignment[0] for r in reports], 3) for i in range(len(g))]
            cells += [mean_sd([r.rows[i].fd[0] for r in reports], 1) for i in range(len(g))]
            lines.append(f"| {row['model']} | {step} | {np.mean(minutes):.1f} | "
                         + " | ".join(cells) + " |")
    return lines


def plot(plt, results: dict):
    g = results["guidance"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for row in results["rows"]:
        steps = [p["step"] for p in row["seeds"][0]["points"]]
        minutes = [np.mean([next(p for p in s["points"] if p["step"] == step)["minutes"]
                            for s in row["seeds"]]) for step in steps]
        for i, s in enumerate(g):
            align = [np.mean([r.rows[i].alignment[0] for r in _reports(row, step)]) for step in steps]
            fd = [np.mean([r.rows[i].fd[0] for r in _reports(row, step)]) for step in steps]
            axes[0].plot(minutes, align, marker="o", label=f"{row['model']}, s = {s:g}")
            axes[1].plot(minutes, fd, marker="o", label=f"{row['model']}, s = {s:g}")
    axes[0].set_ylabel("caption match (shapes checker)")
    axes[1].set_ylabel("FD (shapes classifier features)")
    for ax in axes:
        ax.set_xlabel("training-loop minutes")
        ax.legend(fontsize=8)
    fig.suptitle(TITLE, fontsize=9)
    return fig


if __name__ == "__main__":
    main()
