"""Does the retrieval-augmented emoji model use its references? The denoising loss of the models that
`experiments/retrieval.py` trained, on held-out and on training names, at fixed noise levels.

For each training seed: --n images of the split (a seeded subset), their names, one fixed noise draw; the
loss is the training loss without weighting (the network-output MSE, `objectives.denoising_loss`) at σ in
--sigmas, for the retrieval model with its references shown, with them hidden (the same prompt), and for the
LDM fine-tuned alongside it. On held-out names a lower loss with the references shown than hidden means the
model reads them; below the LDM's means retrieval predicts names it never saw better.

    python experiments/retrieval_probe.py          # → reports/retrieval-probe-emoji
"""

import argparse
from pathlib import Path

import numpy as np
import torch

from latentdiff.checkpoints import load_latent_diffusion
from latentdiff.conditioning.retrieval import Query
from latentdiff.config import LatentDiffusionTrainConfig, load_config
from latentdiff.data import load_dataset, split_holdout, to_model_range
from latentdiff.objectives import denoising_loss
# experiments/ (the script's folder)
from report import Provenance, shown_path, write_report

TITLE = "Retrieval-augmented emoji model: denoising loss with its references shown and hidden"
ARMS = ("references shown", "references hidden", "LDM (no retrieval)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=Path("runs/retrieval-emoji"),
                   help="experiments/retrieval.py's run folder")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    p.add_argument("--n", type=int, default=400)
    p.add_argument("--sigmas", type=float, nargs="+", default=[0.5, 1.0, 3.0])
    p.add_argument("--report", default="retrieval-probe-emoji")
    args = p.parse_args()
    provenance = Provenance()
    data_cfg = load_config(LatentDiffusionTrainConfig, "ldm-emoji-text", []).data
    train, held = split_holdout(load_dataset(data_cfg), data_cfg.holdout, data_cfg.split_seed)
    rows = []
    for seed in args.seeds:
        retrieval = load_latent_diffusion(args.root / f"retrieval-s{seed}/checkpoints/last.safetensors")
        text = load_latent_diffusion(args.root / f"text-s{seed}/checkpoints/last.safetensors")
        for split, data in (("held-out", held.sample(args.n)), ("training", train.sample(args.n))):
            names = list(data.captions)
            with torch.no_grad():
                posterior = retrieval.codec.autoencoder.encode(to_model_range(data.images))
                z0 = retrieval.codec.normalize(getattr(posterior, "mean", posterior))
                noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(0))
                models = {ARMS[0]: (retrieval, retrieval.conditioner.condition(names, "cpu")),
                          ARMS[1]: (retrieval, retrieval.conditioner.condition(
                              [Query(n, None) for n in names], "cpu")),
                          ARMS[2]: (text, text.conditioner.condition(names, "cpu"))}
                for sigma in args.sigmas:
                    s = torch.full((len(z0),), sigma)
                    losses = {arm: round(denoising_loss(m.denoiser, z0, s, noise, c).mean().item(), 5)
                              for arm, (m, c) in models.items()}
                    rows.append({"seed": seed, "split": split, "sigma": sigma, **losses})
                    print(rows[-1], flush=True)
    results = {"n": args.n, "root": shown_path(args.root), "rows": rows}
    print(write_report(args.report, TITLE, results, render, provenance))


def render(results: dict) -> list[str]:
    rows = results["rows"]
    seeds = sorted({r["seed"] for r in rows})
    lines = [f"Models of `{results['root']}` ({len(seeds)} training seeds, mean ± sd); {results['n']} "
             "images per split, one fixed noise draw; the unweighted training loss (network-output MSE).",
             "", "| split | σ | " + " | ".join(ARMS) + " |", "|---|---|" + "---|" * len(ARMS)]
    for split in ("held-out", "training"):
        for sigma in sorted({r["sigma"] for r in rows}):
            picked = [r for r in rows if r["split"] == split and r["sigma"] == sigma]
            cells = [f"{np.mean([r[a] for r in picked]):.4f} ± {np.std([r[a] for r in picked]):.4f}"
                     for a in ARMS]
            lines.append(f"| {split} | {sigma:g} | " + " | ".join(cells) + " |")
    return lines


if __name__ == "__main__":
    main()
