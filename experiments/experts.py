"""eDiff-I's expert denoisers on the digits class model: two and three experts branched from a
trained base, against the base trained on for the same extra steps (equal total training time: an
ensemble evaluates one expert per sample, so its step costs what the base's does).

The base is `ldm-digits` with 10 % condition dropout (the guidance family's class model, 1400
steps). Every variant starts from its EMA weights (`init_from`) and trains `--steps` more at the
same recipe: the base as it is, or split at σ boundaries that give each expert an equal share of
the training noise levels (t-quantiles of the uniform t the objective draws). Each: n samples per
training seed (class i mod 10), dpmpp_2m 20 steps, at guidance 1 and 2: FD in the evaluator's
features and the requested class's accuracy (alignment), mean ± sd over the training seeds.

    python experiments/experts.py      # → reports/experts-digits
"""

import argparse
from pathlib import Path

import numpy as np

from latentdiff.checkpoints import load_latent_diffusion
from latentdiff.config import LatentDiffusionTrainConfig, load_config
from latentdiff.noise import NoiseSchedule
from latentdiff.train.diffusion import train_latent_diffusion
# experiments/ (the script's folder)
from few_step import run_minutes
from guidance_family import Scorer, train_first_stage, train_ldm, trained
from report import Provenance, shown_path, write_report

TITLE = "Expert denoisers branched from a base vs the base trained on (digits)"
SCALES = (1.0, 2.0)


def boundaries(schedule: NoiseSchedule, experts: int) -> list[float]:
    """σ at the t-quantiles k/K of the schedule's T levels: K intervals with equal shares of the
    uniformly drawn training t."""
    T = len(schedule.sigmas)
    return [round(float(schedule.sigmas[round(k * T / experts)]), 4) for k in range(1, experts)]


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
    rows = [{"variant": "base (no extra steps)", "experts": [], "points": [
        {"seed": seed, "scale": s, **{k: v[0] for k, v in score(
            load_latent_diffusion(base), (seed,), True, guidance_scale=s).items()}}
        for seed in range(args.seeds) for s in SCALES]}]
    print(rows[0], flush=True)
    for name, sigmas in variants.items():
        row = {"variant": name, "experts": sigmas, "points": [], "runs": [], "loop_minutes": []}
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
            row["runs"].append(shown_path(last))
            row["loop_minutes"].append(run_minutes(last.parent.parent))
        rows.append(row)
        print(row, flush=True)
    results = {"steps": args.steps, "seeds": args.seeds, "n": args.n, "base": shown_path(base),
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
    lines += ["", f"Extra training-loop minutes per seed: {minutes}."]
    return lines


if __name__ == "__main__":
    main()
