"""Retrieval-augmented generation (Re-Imagen) against the same text-to-image LDM without retrieval, on
the emoji's held-out names (names the models never saw; most have near neighbours among the
training names: other skin tones, other genders, sibling flags).

Both models start from the bundled text-to-image model (`src/latentdiff/models/emoji-text.safetensors`,
8,000 steps of `ldm-emoji-text`) and train --steps more steps with the same recipe, data, latent
scale and seeds (`init_from`): the LDM as it is (`conditioning.kind=text`), the retrieval model with
the k = 2 training pairs nearest to each name (`conditioning.kind=retrieval`; its τ_θ and UNet start
from the bundled ones, the reference layers from scratch). Scored as `latentdiff eval` scores a text
model (`evaluation.alignment`): the first --n held-out names, one sample each, --sampler at
--sample-steps, guidance --guidance; the emoji evaluator's subgroup accuracy and FD in its features
against the training split, beside real-vs-real and shuffled baselines. The retrieval model is also
scored with interleaved guidance (--interleave η) at the largest scale. Cost: the training-loop
minutes and the network's GFLOPs per evaluation.

    python experiments/retrieval.py          # → reports/retrieval-emoji
"""

import argparse
import math
from pathlib import Path

import numpy as np
import torch

from latentdiff.checkpoints import load_latent_diffusion
from latentdiff.checkpoints.io import read_metadata
from latentdiff.config import LatentDiffusionTrainConfig, load_config
from latentdiff.data import load_dataset, split_holdout
from latentdiff.evaluation.alignment import AlignmentReport, evaluate_alignment
from latentdiff.evaluation.autoencoder import stored_data_config
from latentdiff.checkpoints.models import BUNDLED_MODEL
from latentdiff.retrieval import TextIndex
from latentdiff.train.diffusion import train_latent_diffusion
# experiments/ (the script's folder)
from few_step import run_minutes
from guidance_family import trained
from report import Provenance, shown_path, write_report

TITLE = "Retrieval-augmented generation (Re-Imagen) against the same LDM on held-out emoji names"
KINDS = {"LDM": "text", "Re-Imagen": "retrieval"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300, help="training steps of both models")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2], help="training seeds")
    p.add_argument("--n", type=int, default=400, help="held-out names scored")
    p.add_argument("--guidance", type=float, nargs="+", default=[1.0, 3.0])
    p.add_argument("--interleave", type=float, default=0.5)
    p.add_argument("--sampler", default="dpmpp_2m")
    p.add_argument("--sample-steps", type=int, default=20)
    p.add_argument("--root", type=Path, default=Path("runs/retrieval-emoji"))
    p.add_argument("--train-only", action="store_true",
                   help="train the models and stop (another process may train other seeds)")
    p.add_argument("--report", default="retrieval-emoji")
    args = p.parse_args()
    provenance = Provenance()
    scale = latent_scale(BUNDLED_MODEL)
    rows = []
    for name, kind in KINDS.items():
        row = {"model": name, "seeds": []}
        for seed in args.seeds:
            cfg = load_config(LatentDiffusionTrainConfig, "ldm-emoji-text", [
                f"autoencoder={BUNDLED_MODEL}", f"init_from={BUNDLED_MODEL}",
                f"scale_factor={scale!r}", f"conditioning.kind={kind}",
                f"train.max_steps={args.steps}", f"train.seed={seed}",
                f"train.checkpoint_every={args.steps}", "train.sample_every=0",
                f"train.log_every={math.gcd(25, args.steps)}",
                f"train.out_dir={args.root / kind}-s{seed}"])
            checkpoint = trained(cfg, train_latent_diffusion)
            if args.train_only:
                continue
            model = load_latent_diffusion(checkpoint)
            scored = {}
            options = {"sampler": args.sampler, "steps": args.sample_steps}
            with torch.no_grad():
                scored["plain"] = evaluate_alignment(model, stored_data_config(checkpoint),
                                                     args.guidance, n=args.n, **options)
                if kind == "retrieval":
                    scored["interleaved"] = evaluate_alignment(
                        model, stored_data_config(checkpoint), [max(args.guidance)], n=args.n,
                        interleave=args.interleave, **options)
            for label, report in scored.items():
                print(name, seed, label, report.table(), flush=True)
            cost = model.network_cost()
            row["seeds"].append({"seed": seed, "run": shown_path(checkpoint),
                                 "minutes": run_minutes(checkpoint.parent.parent, args.steps),
                                 "gflops": cost.gflops, "parameters": cost.parameters,
                                 **{k: r.to_dict() for k, r in scored.items()}})
        rows.append(row)
    if args.train_only:
        return
    results = {"steps": args.steps, "n": args.n, "guidance": args.guidance,
               "interleave": args.interleave, "sampler": args.sampler,
               "sample_steps": args.sample_steps, "start": shown_path(Path(BUNDLED_MODEL)),
               "neighbours": neighbour_examples(), "rows": rows}
    print(write_report(args.report, TITLE, results, render, provenance))


def latent_scale(path) -> float:
    """The bundled model's latent scale s, so that both runs keep its latent space."""
    return float(read_metadata(path)["latent_stats"]["scale"][0])


def neighbour_examples(count: int = 8) -> list[dict]:
    """The first held-out names and the two training names each retrieves."""
    cfg = load_config(LatentDiffusionTrainConfig, "ldm-emoji-text", []).data
    train, held = split_holdout(load_dataset(cfg), cfg.holdout, cfg.split_seed)
    index = TextIndex(list(train.captions))
    names = list(held.captions[:count])
    found, scores = index.search(names, 2)
    return [{"name": n, "neighbours": [train.captions[i] for i in rows],
             "cosine": [round(s, 3) for s in sims]}
            for n, rows, sims in zip(names, found.tolist(), scores.tolist())]


def _mean(values, digits: int) -> str:
    return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"


def render(results: dict) -> list[str]:
    first = AlignmentReport.from_dict(results["rows"][0]["seeds"][0]["plain"])
    lines = [f"Emoji, text-to-image, both models from `{results['start']}` + {results['steps']} "
             f"steps; {len(results['rows'][0]['seeds'])} training seeds, mean ± sd. The first "
             f"{results['n']} held-out names, one sample each, {results['sampler']} "
             f"{results['sample_steps']} steps. {first.metric}: real held-out images "
             f"{first.real:.3f}, shuffled names {first.shuffled:.3f}; FD real-vs-real "
             f"{first.fd_baseline:.2f}.", "",
             "| model | guidance | alignment | FD | training minutes | GFLOPs / evaluation |",
             "|---|---|---|---|---|---|"]
    for row in results["rows"]:
        seeds = row["seeds"]
        cost = f"{np.mean([s['minutes'] for s in seeds]):.1f} | {seeds[0]['gflops']:.3f}"
        for label in ("plain", "interleaved"):
            if label not in seeds[0]:
                continue
            reports = [AlignmentReport.from_dict(s[label]) for s in seeds]
            for i, r in enumerate(reports[0].rows):
                how = (f"s = {r.guidance_scale:g}" if label == "plain" else
                       f"s = {r.guidance_scale:g}, interleaved η = {results['interleave']:g}")
                lines.append(f"| {row['model']} | {how} | "
                             f"{_mean([x.rows[i].alignment[0] for x in reports], 3)} | "
                             f"{_mean([x.rows[i].fd[0] for x in reports], 2)} | {cost} |")
    lines += ["", "Retrieved training names (TF-IDF cosine) of the first held-out names:", ""]
    lines += [f"- {e['name']}: {e['neighbours'][0]} ({e['cosine'][0]}), {e['neighbours'][1]} "
              f"({e['cosine'][1]})" for e in results["neighbours"]]
    return lines


if __name__ == "__main__":
    main()
