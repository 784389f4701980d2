"""Guidance on the emoji text model: classifier-free guidance with and without a σ interval and
autoguidance (alignment against FD), and semantic image-content guidance towards a target image.

CFG: one sample per held-out prompt (the first n) per seed and scale, scored as
`experiments/cfg_sweep.py` does (the evaluator's accuracy on the prompt's Unicode subgroup, FD in
its features). Autoguidance (with --weak): the same, guided away from a less-trained checkpoint of
the bundled model's own run instead of the unconditional branch. Semantic guidance: for each of m
held-out emoji, an unconditional sample (the empty prompt) guided with strength s towards the
emoji's image (content term, the evaluator network as the embedding), by either step (the exact
tilt, or the move of the clean estimate); reported: the cosine similarity of the samples to their
target in the evaluator's features, and the FD of all samples.

    python experiments/guidance_emoji.py [--n 200] [--seeds 2] [--m 100] [--weak STEP_CKPT]
                                                                          # → reports/guidance-emoji
"""

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from latentdiff.checkpoints import load_latent_diffusion
from latentdiff.checkpoints import read_metadata
from latentdiff.checkpoints.models import bundled_model
from latentdiff.data import load_dataset, split_holdout, to_model_range, to_uint8
from latentdiff.evaluation.alignment import AlignmentReport, evaluate_alignment
from latentdiff.evaluation.autoencoder import stored_data_config
from latentdiff.images import save_image_grid
from latentdiff.metrics.classifier import classify, load_or_train_classifier
from latentdiff.metrics.frechet import FeatureStats, frechet_distance
from latentdiff.pipelines import generate
from latentdiff.parameters import file_sha256
from latentdiff.pipelines.guides import Guides
from latentdiff.semantic_guidance import EvaluatorEmbedder, SemanticTargets
# experiments/ (the script's folder)
from report import REPORTS, Provenance, shown_path, write_report

TITLE = "Guidance on the emoji text model: interval CFG and semantic image guidance"
INTERVAL = (0.3, 5.0)  # σ = t/(1 − t) of the flow schedule: t in 0.23 … 0.83
OPTIONS = {"sampler": "dpmpp_2m", "steps": 20}
NAME = "guidance-emoji"
SHOWN = (("tilt", 0), ("tilt", 0.1), ("x0", 10))  # in semantic.png


def semantic_rows(model, data_cfg, sweeps: dict, seeds, m: int, guidance: float) -> list[dict]:
    """One row per (step, scale) of `sweeps` {step: scales} (scale 0: unguided); the first seed's
    first 8 samples of the scales in SHOWN go to semantic.png under their targets."""
    train, held = split_holdout(load_dataset(data_cfg), data_cfg.holdout, data_cfg.split_seed)
    evaluator, _ = load_or_train_classifier(data_cfg, split=(train, held))
    reference = FeatureStats.of(classify(evaluator, to_model_range(train.images))[1])
    targets = held.sample(m)
    target_images = to_model_range(targets.images)
    target_features = F.normalize(classify(evaluator, target_images)[1], dim=-1)
    rows, shown = [], [target_images[:8]]
    for step, scales in sweeps.items():
        for scale in scales:
            similarity, fds = [], []
            for seed in seeds:
                semantic = SemanticTargets(content=target_images, content_scale=scale, step=step)
                guides = Guides(semantic=semantic, embedder=EvaluatorEmbedder(evaluator))
                images = generate(model, seeds=[seed * m + i for i in range(m)],
                                  prompts=[""] * m, guidance_scale=guidance,
                                  guides=guides if scale else None, batch_size=50, **OPTIONS)
                features = classify(evaluator, images)[1]
                similarity.append(float((F.normalize(features, dim=-1) * target_features).sum(-1)
                                        .mean()))
                fds.append(frechet_distance(FeatureStats.of(features), reference))
                if seed == seeds[0] and (step, scale) in SHOWN:
                    shown.append(images[:8])
            rows.append({"step": step, "scale": scale, "similarity": similarity, "fd": fds})
            print(rows[-1], flush=True)
    save_image_grid(to_uint8(torch.cat(shown)), REPORTS / NAME / "semantic.png", ncols=8)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--m", type=int, default=100, help="semantic guidance targets")
    p.add_argument("--guidance", type=float, nargs="+", default=[1, 2, 3, 4, 6])
    p.add_argument("--tilt-scales", type=float, nargs="+", default=[0, 0.1, 0.3, 1, 3],
                   help="semantic guidance scales of the exact tilt step")
    p.add_argument("--x0-scales", type=float, nargs="+", default=[1, 3, 10, 30],
                   help="semantic guidance scales of the clean-estimate step")
    p.add_argument("--weak", type=Path, default=None,
                   help="autoguidance's weak model: a less-trained checkpoint of the bundled model's "
                        "run (`train.keep_checkpoints=true`); default: no autoguidance rows")
    args = p.parse_args()
    provenance = Provenance()
    checkpoint = bundled_model()
    model = load_latent_diffusion(checkpoint)
    data_cfg = stored_data_config(checkpoint)
    seeds = range(args.seeds)
    reports = {}
    methods = [("CFG", {}), ("CFG, σ interval", {"guidance_interval": INTERVAL})]
    if args.weak is not None:
        weak = Guides(autoguide=load_latent_diffusion(args.weak))
        methods += [("autoguidance", {"guides": weak}),
                    ("autoguidance, σ interval", {"guides": weak, "guidance_interval": INTERVAL})]
    for name, extra in methods:
        report = evaluate_alignment(model, data_cfg, args.guidance, seeds=seeds, n=args.n,
                                    **OPTIONS, **extra)
        reports[name] = report.to_dict()
        print(name, report.table(), flush=True)
    semantic = semantic_rows(model, data_cfg, {"tilt": args.tilt_scales, "x0": args.x0_scales},
                             seeds, args.m, guidance=1.0)
    results = {"model": shown_path(checkpoint), "interval": list(INTERVAL), **OPTIONS,
               "weak": None if args.weak is None else {
                   "path": shown_path(args.weak), "step": read_metadata(args.weak).get(
                       "train_state", {}).get("step"), "sha256": file_sha256(args.weak)},
               "reports": reports, "semantic": semantic, "m": args.m, "seeds": args.seeds}
    print(write_report(NAME, TITLE, results, render, provenance, images=("semantic.png",)))


def render(results: dict) -> list[str]:
    lines = [f"Model: `{results['model']}`; {results['sampler']}, {results['steps']} steps. "
             f"σ interval {results['interval']}.", ""]
    if results.get("weak"):
        w = results["weak"]
        lines += [f"Autoguidance's weak model: `{w['path']}`, step {w['step']} of the bundled "
                  f"model's own training run (8,000 steps), file sha256 `{w['sha256'][:16]}`.", ""]
    for name, report in results["reports"].items():
        lines += [f"**{name}**", "", AlignmentReport.from_dict(report).table(), ""]
    lines += ["**Semantic image-content guidance** (evaluator embedding): for each of "
              f"{results['m']} held-out emoji, one unconditional sample (the empty prompt) per "
              "seed guided towards its image; cosine similarity of the samples to their targets in "
              f"the evaluator's features and FD of the {results['m']} samples (mean ± sd over "
              f"{results['seeds']} seeds). Step `tilt`: x̂₀ + σ²·∇_x g(D(x; σ)); step `x0`: x̂₀ + "
              "∇_x̂₀ g(x̂₀) (`semantic_guidance.py`). The embedding that guides is the one that "
              "scores.", "",
              "| step | content scale | similarity to the target | FD |", "|---|---|---|---|"]
    for r in results["semantic"]:
        lines.append(f"| {r.get('step', 'tilt')} | {r['scale']:g} | {np.mean(r['similarity']):.3f}"
                     f" ± {np.std(r['similarity']):.3f} | {np.mean(r['fd']):.2f} ± "
                     f"{np.std(r['fd']):.2f} |")
    if "semantic.png" in results.get("figures", []):
        lines += ["", "`semantic.png`, rows: the targets; unguided; tilt at 0.1; x0 at 10 "
                  "(seed 0)."]
    return lines


if __name__ == "__main__":
    main()
