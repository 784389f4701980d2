"""Target-distribution-aware sampling (TDAS) on MNIST latents: FD against the reverse SDE's steps with
and without the preconditioner, at the training size and at twice it.

Model: the unconditional MNIST `ldm-digits` (64 channels, 1400 steps, ε, 3×8×8 latents for 32×32
images; the guidance family's, shared with experiments/spectral.py and tdpm.py). Sampler:
`reverse_sde` (Euler–Maruyama on the reverse VE SDE, no corrector) at each of --steps steps on the
model's uniform timestep grid, plain or with `Preconditioner.of_statistics(*target_statistics(z),
alpha)` (frequency and space filters, Ma et al.'s PDS/TDAS), z the normalised latents (posterior
means) of the first --stat-images training images at that size: 32×32 as they are, and 64×64
(the images upsampled bilinearly, then encoded: 3×16×16 latents) for beyond-training-size sampling.
Score: FD in the digits evaluator's features against the training split (64×64 samples are first
reduced to 32×32 by area averaging), n samples per seed, sampling seeds 0 … --seeds − 1, beside the
real-vs-real FD at n. Cost: one network evaluation per step for both (the filters are two FFTs).

    python experiments/tdas.py          # → reports/tdas-mnist
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from latentdiff.checkpoints import load_latent_diffusion
from latentdiff.config import LatentDiffusionTrainConfig, load_config
from latentdiff.data import load_dataset, split_holdout, to_model_range
from latentdiff.metrics.classifier import classify
from latentdiff.metrics.frechet import FeatureStats, frechet_distance
from latentdiff.pipelines import generate
from latentdiff.samplers import Preconditioner
from latentdiff.samplers.preconditioned import target_statistics
# experiments/ (the script's folder)
from guidance_family import Scorer, train_first_stage, train_ldm
from report import Provenance, shown_path, write_report
from spectral import DATA
from tdpm import errorbar_curve, fd_by_steps

TITLE = "TDAS on MNIST latents: FD against reverse-SDE steps, with and without the preconditioner"


@torch.no_grad()
def latent_statistics(model, images: torch.Tensor, side: int, batch: int = 250):
    """target_statistics of the normalised posterior means of uint8 `images` (N, 1, 32, 32)
    resized to side × side."""
    z = []
    for start in range(0, len(images), batch):
        x = to_model_range(images[start:start + batch])
        if side != x.shape[-1]:
            x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
        z.append(model.codec.normalize(model.codec.autoencoder.encode(x).mean))
    return target_statistics(torch.cat(z))


def fd_of(score: Scorer, images: torch.Tensor) -> float:
    if images.shape[-1] != 32:
        images = F.interpolate(images, size=(32, 32), mode="area")
    return frechet_distance(FeatureStats.of(classify(score.evaluator, images)[1]), score.reference)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--n", type=int, default=400)
    p.add_argument("--steps", type=int, nargs="+", default=[20, 50, 100])
    p.add_argument("--sides", type=int, nargs="+", default=[32, 64], help="image sides sampled")
    p.add_argument("--alpha", type=float, default=5.0)
    p.add_argument("--stat-images", type=int, default=5000)
    p.add_argument("--root", type=Path, default=Path("runs/guidance-family/mnist"))
    p.add_argument("--report", default="tdas-mnist")
    args = p.parse_args()
    provenance = Provenance()
    ae = train_first_stage(args.root, DATA)
    base = train_ldm(args.root, ae, "unconditional", DATA, "unet.num_classes=null")
    model = load_latent_diffusion(base)
    score = Scorer(args.n, DATA)
    data_cfg = load_config(LatentDiffusionTrainConfig, "ldm-digits", ["autoencoder=x", *DATA]).data
    train = split_holdout(load_dataset(data_cfg), data_cfg.holdout, data_cfg.split_seed)[0]
    images = torch.as_tensor(train.images[:args.stat_images])
    f = model.codec.downsampling_factor
    rows = []
    for side in args.sides:
        statistics = latent_statistics(model, images, side)
        for name, m in (("plain", None),
                        ("TDAS", Preconditioner.of_statistics(*statistics, alpha=args.alpha))):
            row = {"side": side, "sampler": name, "points": []}
            for seed in range(args.seeds):
                for k in args.steps:
                    start = time.perf_counter()
                    out = generate(model, seeds=[seed * args.n + i for i in range(args.n)],
                                   sampler="reverse_sde", steps=k, latent_size=(side // f, side // f),
                                   **({} if m is None else {"preconditioner": m}))
                    row["points"].append({"seed": seed, "steps": k, "fd": fd_of(score, out),
                                          "sampling_s": time.perf_counter() - start})
                    print(side, name, seed, k, round(row["points"][-1]["fd"], 3), flush=True)
            rows.append(row)
    results = {"seeds": args.seeds, "n": args.n, "steps": args.steps, "alpha": args.alpha,
               "stat_images": args.stat_images, "baseline": score.baseline, "model": shown_path(base),
               "rows": rows}
    print(write_report(args.report, TITLE, results, render, provenance, plot=plot))


def render(results: dict) -> list[str]:
    steps = results["steps"]
    lines = [f"MNIST, the unconditional LDM-4 (trained on 32×32 images, 3×8×8 latents); `reverse_sde`, "
             f"no corrector, uniform timesteps; {results['seeds']} sampling seeds, n = {results['n']} "
             f"each. TDAS: PDS filters with α = {results['alpha']} from the latents of "
             f"{results['stat_images']} training images at the sampled size. FD in the evaluator's "
             "features against the training split (64×64 samples reduced to 32×32); real-vs-real "
             f"at the same n: {results['baseline']['fd']:.3f}.", "",
             "| image side | sampler | " + " | ".join(f"{k} steps" for k in steps) + " |",
             "|---|---|" + "---|" * len(steps)]
    for r in results["rows"]:
        curve = fd_by_steps(r["points"])
        lines.append(f"| {r['side']} | {r['sampler']} | " + " | ".join(
            f"{np.mean(curve[k]):.2f} ± {np.std(curve[k]):.2f}" for k in steps) + " |")
    return lines


def plot(plt, results: dict):
    sides = sorted({r["side"] for r in results["rows"]})
    fig, axes = plt.subplots(1, len(sides), figsize=(5 * len(sides), 4), squeeze=False)
    for ax, side in zip(axes[0], sides):
        for r in [r for r in results["rows"] if r["side"] == side]:
            errorbar_curve(ax, fd_by_steps(r["points"]), r["sampler"])
        ax.set_xscale("log")
        ax.set_xlabel("reverse-SDE steps")
        ax.set_ylabel("FD")
        ax.set_title(f"{side}×{side} samples", fontsize=9)
        ax.legend(fontsize=8)
    fig.suptitle(TITLE, fontsize=9)
    return fig


if __name__ == "__main__":
    main()
