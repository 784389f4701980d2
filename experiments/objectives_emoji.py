"""Training objectives on the text-to-image emoji model at a fixed budget: alignment and FD at
guidance s = 1 and 3 (the README's), for today's recipe and the modern ones.

Every run is the bundled model's config (configs/ldm-emoji-text.yaml: 7.2 M-parameter UNet, τ_θ
trained jointly, batch 64, AdamW 1e-3, EMA 0.999) on the bundled model's own autoencoder, for
--steps steps, with one recipe of experiments/objectives.py. Each is scored as the bundled model
is (`evaluation.alignment`): one sample per held-out name (the first --n), DDIM --sample-steps,
for each guidance scale and sampling seed; alignment is the emoji classifier's accuracy on the
name's Unicode subgroup, FD in its features against the training emoji.

    python experiments/objectives_emoji.py [--steps 1250] [--seeds 0 1] [--recipes eps v-minsnr5 flow]
                                           [--n 200] [--sample-seeds 2] [--runs runs/objectives-emoji]
                                           [--override KEY=VALUE ...]

--override changes the config of every run (e.g. `conditioning.text.vocab_size=1024`, the bundled config's
vocabulary when the first runs were made).

Finished runs are reused when run again; an interrupted one resumes.
"""

import argparse
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from latentdiff.checkpoints import load_latent_diffusion
from latentdiff.checkpoints.models import bundled_model
from latentdiff.config import LatentDiffusionTrainConfig, load_config
from latentdiff.evaluation.alignment import AlignmentReport, evaluate_alignment
from latentdiff.evaluation.autoencoder import stored_data_config
from latentdiff.files import write_text
from latentdiff.train.diffusion import train_latent_diffusion
# experiments/ (the script's folder is on sys.path)
from ldm_tradeoff import finished, log_times
from objectives import RECIPES
from report import Provenance, write_report

TITLE = "Training objectives on the text-to-image emoji model at a fixed budget"
GUIDANCE = (1.0, 3.0)


def run_config(recipe: str, seed: int, out: Path, steps: int,
               overrides: Sequence[str] = ()) -> LatentDiffusionTrainConfig:
    base = load_config(LatentDiffusionTrainConfig, "ldm-emoji-text",
                       [f"autoencoder={bundled_model()}", *overrides])
    _, diffusion, objective = RECIPES[recipe]
    every = max(1, steps // 5)
    return dataclasses.replace(
        base, diffusion=diffusion, objective=objective,
        train=dataclasses.replace(base.train, out_dir=str(out), max_steps=steps, seed=seed,
                                  sample_every=0, checkpoint_every=every, log_every=every))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1250)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds")
    p.add_argument("--recipes", nargs="+", default=["eps", "v-minsnr5", "flow"],
                   choices=list(RECIPES))
    p.add_argument("--n", type=int, default=200, help="held-out names scored per seed and scale")
    p.add_argument("--sample-seeds", type=int, default=2)
    p.add_argument("--sample-steps", type=int, default=50, help="DDIM steps")
    p.add_argument("--runs", type=Path, default=Path("runs/objectives-emoji"))
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="a config override for every run; repeatable")
    args = p.parse_args()
    provenance = Provenance()
    scores_path = args.runs / "scores.json"
    scores = json.loads(scores_path.read_text()) if scores_path.exists() else {}
    results = {"steps": args.steps, "seeds": args.seeds, "n": args.n,
               "sample_seeds": args.sample_seeds, "sample_steps": args.sample_steps,
               "guidance": list(GUIDANCE), "overrides": args.override, "recipes": {}}
    for recipe in args.recipes:
        runs = {}
        for seed in args.seeds:
            run = args.runs / f"{recipe}-seed{seed}"
            checkpoint = run / "checkpoints" / "last.safetensors"
            if not finished(run):
                print(f"training {recipe}, seed {seed}", flush=True)
                train_latent_diffusion(run_config(recipe, seed, run, args.steps, args.override),
                                       resume=checkpoint.exists())
            key = f"{checkpoint}|{args.n}|{args.sample_seeds}|{args.sample_steps}"
            if key not in scores:
                with torch.no_grad():
                    report = evaluate_alignment(load_latent_diffusion(checkpoint),
                                                stored_data_config(checkpoint), GUIDANCE,
                                                seeds=range(args.sample_seeds), n=args.n,
                                                sampler="ddim", steps=args.sample_steps)
                print(report.table(), flush=True)
                scores[key] = report.to_dict()
                write_text(scores_path, json.dumps(scores, indent=1))
            runs[str(seed)] = {"report": scores[key],
                               "minutes": max(log_times(run).values()) / 60}
        results["recipes"][recipe] = {"what": RECIPES[recipe][0], "runs": runs}
    print(write_report("objectives-emoji", TITLE, results, render, provenance))


def render(results: dict) -> list[str]:
    first = next(iter(results["recipes"].values()))["runs"]
    report = AlignmentReport.from_dict(next(iter(first.values()))["report"])
    overrides = " ".join(f"`{o}`" for o in results["overrides"])
    lines = [(f"The bundled model's config (`configs/ldm-emoji-text.yaml`"
              f"{' with ' + overrides if overrides else ''}) and autoencoder, "
              f"{results['steps']} training steps per run, training seeds "
              f"{', '.join(map(str, results['seeds']))}; scored on the first {results['n']} "
              f"held-out names, DDIM-{results['sample_steps']}, sampling seeds 0–"
              f"{results['sample_seeds'] - 1}. {report.metric}; real held-out images "
              f"{report.real:.3f}, shuffled names (chance) {report.shuffled:.3f}; FD real-vs-real "
              f"{report.fd_baseline:.2f}. Mean ± sd over training seeds (each the mean over "
              "sampling seeds)."), "",
             "| recipe | training time | " + " | ".join(
                 f"alignment s = {g:g} | FD s = {g:g}" for g in results["guidance"]) + " |",
             "|---|---|" + "---|---|" * len(results["guidance"])]
    for recipe, r in results["recipes"].items():
        cells = []
        for i in range(len(results["guidance"])):
            rows = [AlignmentReport.from_dict(run["report"]).rows[i] for run in r["runs"].values()]
            for values in ([np.mean(row.alignment) for row in rows], [np.mean(row.fd) for row in rows]):
                cells.append(f"{np.mean(values):.3f} ± {np.std(values):.3f}")
        minutes = np.mean([run["minutes"] for run in r["runs"].values()])
        lines.append(f"| {r['what']} (`{recipe}`) | {minutes:.1f} min | " + " | ".join(cells) + " |")
    return lines


if __name__ == "__main__":
    main()
