"""eDiff-I's expert denoisers on the digits class model: two and three experts branched from a
trained base, against the base trained on for the same extra steps (equal total training time: an
ensemble evaluates one expert per sample, so its step costs what the base's does).

The base is `ldm-digits` with 10 % condition dropout (the guidance family's class model, 1400
steps). Every variant starts from its EMA weights (`init_from`) and trains `--steps` more at the
same recipe: the base as it is, or split at σ boundaries that give each expert an equal share of
the training noise levels (t-quantiles of the uniform t the objective draws). Each: n samples per
training seed (class i mod 10), dpmpp_2m 20 steps, at guidance 1, 1.5 and 2: FD in the evaluator's
features and the requested class's accuracy (alignment), mean ± sd over the training seeds.

Where the experts gain or lose: every model's held-out denoising loss (ε-MSE, the training loss) in
six equal bins of the timestep t (so the 2- and 3-expert boundaries are bin edges), on the held-out
images' latents with the same t and noise for every model, with the true label and with the null
label (their difference: how much the label tells the denoiser at that noise level).

    python experiments/experts.py      # → reports/experts-digits
"""

import argparse
from pathlib import Path

import numpy as np
import torch

from latentdiff.checkpoints import load_latent_diffusion
from latentdiff.conditioning import Cond
from latentdiff.config import LatentDiffusionTrainConfig, load_config
from latentdiff.data import load_dataset, split_holdout, to_model_range
from latentdiff.ldm import LatentDiffusion
from latentdiff.noise import NoiseSchedule
from latentdiff.objectives import ddpm_loss
from latentdiff.train.diffusion import train_latent_diffusion
# experiments/ (the script's folder)
from few_step import run_minutes
from guidance_family import Scorer, train_first_stage, train_ldm, trained
from report import Provenance, shown_path, write_report

TITLE = "Expert denoisers branched from a base vs the base trained on (digits)"
SCALES = (1.0, 1.5, 2.0)
BINS = 6  # t bins of the held-out loss
DRAWS = 4  # (t, noise) draws per held-out image and bin


def boundaries(schedule: NoiseSchedule, experts: int) -> list[float]:
    """σ at the t-quantiles k/K of the schedule's T levels: K intervals with equal shares of the
    uniformly drawn training t."""
    T = len(schedule.sigmas)
    return [round(float(schedule.sigmas[round(k * T / experts)]), 4) for k in range(1, experts)]


def heldout_loss(model: LatentDiffusion, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """Mean held-out ε-MSE per t bin [bT/BINS, (b+1)T/BINS) with the true labels ("cond") and the
    null label ("null"): images (N, C, H, W) in [-1, 1], labels (N,). The t and noise draws are
    seeded the same for every model."""
    generator = torch.Generator().manual_seed(0)
    T, null = model.schedule.num_timesteps, torch.full_like(labels, model.num_classes - 1)
    with torch.no_grad():
        z0 = model.codec.encode(images)
        out = {"cond": [], "null": []}
        for b in range(BINS):
            sums = {"cond": 0.0, "null": 0.0}
            for _ in range(DRAWS):
                t = torch.randint(b * T // BINS, (b + 1) * T // BINS, (len(z0),), generator=generator)
                noise = torch.randn(z0.shape, generator=generator)
                for key, y in (("cond", labels), ("null", null)):
                    sums[key] += ddpm_loss(model.denoiser, z0, t, noise, Cond(class_labels=y)).mean().item()
            for key in out:
                out[key].append(sums[key] / DRAWS)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=700, help="extra training steps of every variant")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--n", type=int, default=400)
    p.add_argument("--root", type=Path, default=Path("runs/guidance-family/digits"))
    args = p.parse_args()
    provenance = Provenance()
    ae = train_first_stage(args.root, ())
    base = train_ldm(args.root, ae, "class", (), "conditioning.drop_prob=0.1",
                     "unet.num_classes=11", "train.keep_checkpoints=true",
                     "train.checkpoint_every=350")
    schedule = load_latent_diffusion(base).schedule
    variants = {"base, trained on": [], **{f"{k} experts": boundaries(schedule, k) for k in (2, 3)}}
    score = Scorer(args.n, ())
    data_cfg = load_config(LatentDiffusionTrainConfig, "ldm-digits", ["autoencoder=x"]).data
    heldout = split_holdout(load_dataset(data_cfg), data_cfg.holdout, data_cfg.split_seed)[1]
    held = (to_model_range(heldout.images), heldout.labels)
    base_model = load_latent_diffusion(base)
    rows = [{"variant": "base (no extra steps)", "experts": [], "points": [
        {"seed": seed, "scale": s, **{k: v[0] for k, v in score(
            base_model, (seed,), True, guidance_scale=s).items()}}
        for seed in range(args.seeds) for s in SCALES], "losses": [heldout_loss(base_model, *held)]}]
    print(rows[0], flush=True)
    for name, sigmas in variants.items():
        row = {"variant": name, "experts": sigmas, "points": [], "runs": [], "loop_minutes": [],
               "losses": []}
        for seed in range(args.seeds):
            cfg = load_config(LatentDiffusionTrainConfig, "ldm-digits", [
                f"autoencoder={ae}", "conditioning.drop_prob=0.1", "unet.num_classes=11",
                f"init_from={base}", f"experts=[{','.join(map(str, sigmas))}]",
                f"train.max_steps={args.steps}", f"train.checkpoint_every={args.steps}",
                f"train.seed={seed + 1}",
                f"train.out_dir={args.root / 'experts' / name.split(',')[0].replace(' ', '-')}-s{seed}"])
            last = trained(cfg, train_latent_diffusion)
            model = load_latent_diffusion(last)
            for s in SCALES:
                scored = score(model, (seed,), True, guidance_scale=s)
                row["points"].append({"seed": seed, "scale": s, **{k: v[0] for k, v in scored.items()}})
            row["losses"].append(heldout_loss(model, *held))
            row["runs"].append(shown_path(last))
            row["loop_minutes"].append(run_minutes(last.parent.parent))
        rows.append(row)
        print(row, flush=True)
    T = len(schedule.sigmas)
    results = {"bin_sigmas": [[float(schedule.sigmas[b * T // BINS]),
                               float(schedule.sigmas[(b + 1) * T // BINS - 1])] for b in range(BINS)],
               "heldout_images": len(held[0]), "steps": args.steps, "seeds": args.seeds, "n": args.n,
               "base": shown_path(base),
               "base_minutes": run_minutes(base.parent.parent), "baseline": score.baseline,
               "evaluator_heldout_accuracy": score.evaluator_accuracy, "rows": rows}
    print(write_report("experts-digits", TITLE, results, render, provenance))


def _mean(values) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def render(results: dict) -> list[str]:
    lines = [f"Base: the digits class model ({results['base_minutes']} training-loop minutes). "
             f"Every variant: {results['steps']} more steps from the base's EMA weights, "
             f"{results['seeds']} training seeds; n = {results['n']} samples per seed (class i mod "
             "10), dpmpp_2m 20 steps. FD in the evaluator's features against the training split "
             f"(real-vs-real at the same n: {results['baseline']['fd']:.3f}); accuracy: the "
             "evaluator's on the requested class.", "",
             "| variant | σ boundaries | guidance | FD | accuracy | precision | recall |",
             "|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        for s in sorted({p["scale"] for p in r["points"]}):
            points = [p for p in r["points"] if p["scale"] == s]
            lines.append(f"| {r['variant']} | {', '.join(f'{b:g}' for b in r['experts']) or '–'} "
                         f"| {s:g} | {_mean([p['fd'] for p in points])} | "
                         f"{_mean([p['accuracy'] for p in points])} | "
                         f"{_mean([p['precision'] for p in points])} | "
                         f"{_mean([p['recall'] for p in points])} |")
    minutes = ", ".join(f"{r['variant']} {'/'.join(f'{m:g}' for m in r['loop_minutes'] if m)}"
                        for r in results["rows"] if r.get("loop_minutes"))
    lines += ["", f"Extra training-loop minutes per seed: {minutes}.", ""] + _loss_tables(results)
    return lines


def _loss_tables(results: dict) -> list[str]:
    """The held-out loss per t bin: with the true label (and its ratio to the base trained on), and
    the label's gain (null-label loss − true-label loss)."""
    bins = results["bin_sigmas"]
    head = "| variant | " + " | ".join(f"σ {lo:.3g}–{hi:.3g}" for lo, hi in bins) + " |"
    rule = "|---|" + "---|" * len(bins)
    by = {r["variant"]: np.array([[loss["cond"], np.subtract(loss["null"], loss["cond"])]
                                  for loss in r["losses"]]) for r in results["rows"]}
    reference = by["base, trained on"][:, 0].mean(0)
    lines = [f"Held-out denoising loss (ε-MSE) per timestep bin, true label: {len(by)} models on the "
             f"{results['heldout_images']} held-out images, {DRAWS} (t, noise) draws per image and bin, "
             "the same for every model; mean ± sd over training seeds, (ratio to the base trained "
             "on).", "", head, rule]
    for variant, values in by.items():
        cond = values[:, 0]
        lines.append(f"| {variant} | " + " | ".join(
            f"{m:.4f} ± {sd:.4f} ({m / ref:.3f}×)"
            for m, sd, ref in zip(cond.mean(0), cond.std(0), reference)) + " |")
    lines += ["", "What the label is worth per bin: null-label loss − true-label loss (larger: the "
              "denoiser leans more on the class there; classifier-free guidance scales this "
              "difference).", "", head, rule]
    for variant, values in by.items():
        lines.append(f"| {variant} | " + " | ".join(f"{m:.4f}" for m in values[:, 1].mean(0)) + " |")
    return lines


if __name__ == "__main__":
    main()
