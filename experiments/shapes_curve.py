"""The learning curve of a shapes model: alignment, FD, the position sweep and (for captions) why the
misses miss, at each kept checkpoint of a run.

For each run (a `latentdiff train ... train.keep_checkpoints=true` folder) and each kept step (--at,
default all), the checkpoint is scored as `latentdiff eval` scores it (`evaluation.alignment`: the
first --n held-out conditions, one sampling seed, DDIM --sample-steps, each --guidance): mean box
IoU for layout models, caption match for text ones, FD in the shapes classifier's features. At
--breakdown-guidance it adds the position sweep's score (`position_sweep.py`) and, for text models,
the checker's reason for each sample's miss (`metrics.shapes.caption_failure`: count, kind, colour
or size, relation), on the same samples the alignment scores (same seeds), for one-shape and
two-shape captions apart; relation accuracy = the share of two-shape samples with both shapes right
whose relation holds.

    python experiments/shapes_curve.py RUN [RUN ...] [--at 500 1000 2000] [--guidance 1 2 4]
                                       [--breakdown-guidance 2] [--n 200] [--sample-steps 20]
                                       [--name shapes-curve]
"""

import argparse
import re
from collections import Counter
from pathlib import Path

import torch

from latentdiff.checkpoints import load_latent_diffusion
from latentdiff.evaluation.alignment import AlignmentReport, evaluate_alignment
from latentdiff.evaluation.autoencoder import stored_data_config
from latentdiff.metrics.shapes import CAPTION_FAILURES, caption_failure
from latentdiff.pipelines.generate import generate
# experiments/ (the script's folder is on sys.path)
from position_sweep import detections_of, held_out_scenes, sweep_score
from report import Provenance, shown_path, write_report

TITLE = "Learning curves of the shapes models"


def kept(run: Path, at: list[int] | None) -> dict[int, Path]:
    """{step: checkpoint} of a run's kept checkpoints (step-NNNNNNN.safetensors), those in `at`."""
    found = {int(re.search(r"(\d+)", p.stem).group(1)): p
             for p in (run / "checkpoints").glob("step-*.safetensors")}
    if not found:
        raise SystemExit(f"{run} has no kept checkpoints; train it with train.keep_checkpoints=true")
    return {s: p for s, p in sorted(found.items()) if at is None or s in at}


def failures(model, checkpoint: Path, n: int, guidance: float, steps: int) -> dict[str, dict[str, int]]:
    """The checker's reasons over the held-out captions' samples, seeded as `evaluate_alignment`'s
    first sampling seed, for one-shape and two-shape captions apart."""
    scenes = held_out_scenes(stored_data_config(checkpoint), n)
    images = generate(model, list(range(len(scenes))), prompts=[s.caption() for s in scenes],
                      guidance_scale=guidance, sampler="ddim", steps=steps)
    reasons = {1: Counter(), 2: Counter()}
    for scene, found in zip(scenes, detections_of(images)):
        reasons[len(scene.shapes)][caption_failure(scene, found)] += 1
    return {f"{k} shape{'s' * (k > 1)}": {reason: reasons[k][reason] for reason in CAPTION_FAILURES}
            for k in (1, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--at", type=int, nargs="+", help="steps to score (default: every kept one)")
    p.add_argument("--guidance", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    p.add_argument("--breakdown-guidance", type=float, default=2.0)
    p.add_argument("--n", type=int, default=200, help="held-out conditions scored")
    p.add_argument("--sample-steps", type=int, default=20, help="DDIM steps")
    p.add_argument("--name", default="shapes-curve", help="the report folder under reports/")
    args = p.parse_args()
    provenance = Provenance()
    results = {"guidance": args.guidance, "breakdown_guidance": args.breakdown_guidance, "n": args.n,
               "sample_steps": args.sample_steps, "runs": {}}
    for run in args.runs:
        points = []
        for step, checkpoint in kept(run, args.at).items():
            model = load_latent_diffusion(checkpoint)
            with torch.no_grad():
                report = evaluate_alignment(model, stored_data_config(checkpoint), args.guidance,
                                            n=args.n, sampler="ddim", steps=args.sample_steps)
                point = {"step": step, "report": report.to_dict(),
                         "sweep": sweep_score(model, 8, args.breakdown_guidance, args.sample_steps)}
                if model.conditioner.kind == "text":
                    point["failures"] = failures(model, checkpoint, args.n, args.breakdown_guidance,
                                                 args.sample_steps)
            print(shown_path(checkpoint), {k: v for k, v in point.items() if k != "report"}, flush=True)
            print(report.table(), flush=True)
            points.append(point)
        results["runs"][shown_path(run)] = {"kind": model.conditioner.kind, "points": points}
    print(write_report(args.name, TITLE, results, render, provenance))


def render(results: dict) -> list[str]:
    g = results["guidance"]
    lines = [f"The first {results['n']} held-out conditions, one sample each, "
             f"DDIM-{results['sample_steps']}; "
             f"sweep and failures at guidance {results['breakdown_guidance']:g} (layouts: correlation of the "
             "detected with the requested centre, mean of x and y; captions: share of the four relations' "
             "samples with both shapes found and the relation holding)."]
    for run, r in results["runs"].items():
        first = AlignmentReport.from_dict(r["points"][0]["report"])
        text = r["kind"] == "text"
        lines += ["", f"`{run}`: {first.metric}; real held-out images {first.real:.3f}, shuffled "
                  f"{first.shuffled:.3f}; FD real-vs-real {first.fd_baseline:.2f}.", "",
                  "| step | " + " | ".join(f"alignment s = {s:g}" for s in g) + " | "
                  + " | ".join(f"FD s = {s:g}" for s in g) + " | sweep |"
                  + (" one shape: match | two shapes: " + " | ".join(CAPTION_FAILURES)
                     + " | relation accuracy |" if text else ""),
                  "|---|" + "---|" * (2 * len(g) + 1 + (len(CAPTION_FAILURES) + 2) * text)]
        for point in r["points"]:
            rows = AlignmentReport.from_dict(point["report"]).rows
            cells = [f"{row.alignment[0]:.3f}" for row in rows] + [f"{row.fd[0]:.1f}" for row in rows]
            cells.append(f"{point['sweep']:.2f}")
            if text:
                one, two = point["failures"]["1 shape"], point["failures"]["2 shapes"]
                cells.append(f"{one['match']}/{sum(one.values())}")
                cells += [str(two[reason]) for reason in CAPTION_FAILURES]
                placed = two["match"] + two["relation"]  # both shapes right: is the relation?
                cells.append(f"{two['match'] / placed:.2f}" if placed else "–")
            lines.append(f"| {point['step']} | " + " | ".join(cells) + " |")
    return lines


if __name__ == "__main__":
    main()
