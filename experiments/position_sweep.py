"""Does a shapes model put things where its condition says? A sweep that answers in a minute what a
full evaluation answers in many.

Layout models: one small yellow square requested at each of 3 × 3 centres (0.2, 0.5, 0.8 in x and
y), --seeds samples each; the analytic checker (`metrics/shapes.py`) finds the largest yellow shape
in every sample. Reported: how often one is found, the correlation of its detected centre with the
requested one along x and along y (1: placed exactly where asked, 0: position ignored), the mean
centre error, and the mean box IoU.
Text models: "a large red circle REL a small blue square" for the four relations, --seeds samples
each; reported per relation: the mean offset (red − blue centre, in image sides; "above" should give
dy < 0, "left of" dx < 0) and the share of samples in which the relation holds along its axis.

    python experiments/position_sweep.py CHECKPOINT [CHECKPOINT ...] [--seeds 8] [--guidance 2]
                                         [--steps 20] [--name position-sweep]
"""

import argparse
import functools
from pathlib import Path

import numpy as np
import torch

from latentdiff.checkpoints import load_latent_diffusion
from latentdiff.config import DataConfig
from latentdiff.data import load_dataset, split_holdout, to_uint8
from latentdiff.data.shapes import COLOUR_NAMES, KINDS, RELATIONS, SIZES, Scene, scene_of
from latentdiff.images import draw_boxes, save_image_grid
from latentdiff.metrics.shapes import box_iou, detect_shapes
from latentdiff.pipelines.generate import generate
# experiments/ (the script's folder is on sys.path)
from report import REPORTS, Provenance, shown_path, write_report

TITLE = "Position sweep: do the shapes models follow where their condition puts things?"
CENTRES = (0.2, 0.5, 0.8)
SQUARE = COLOUR_NAMES.index("yellow") * len(KINDS) + KINDS.index("square")
CAPTION = "a large red circle {} a small blue square"


def largest(detections, colour: str):
    """The largest detected shape of `colour` (detections come largest first), or None."""
    return next((d for d in detections if d.colour == colour), None)


@functools.lru_cache(maxsize=2)
def held_out_scenes(data: DataConfig, n: int) -> list[Scene]:
    """The scenes of the first n held-out images of a shapes data config, in the order the evaluation
    (`evaluation.alignment`) takes them; built once per config and n."""
    _, held = split_holdout(load_dataset(data), data.holdout, data.split_seed)
    held = held.sample(n)
    return [scene_of(c, b) for c, b in zip(held.captions, held.boxes)]


def detections_of(samples: torch.Tensor) -> list:
    return [detect_shapes(p) for p in to_uint8(samples).permute(0, 2, 3, 1).numpy()]


def correlation(a: list[float], b: list[float]) -> float | None:
    """Pearson's r, or None with fewer than 3 pairs or no spread."""
    if len(a) < 3 or np.std(a) == 0 or np.std(b) == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def square_boxes() -> list[tuple]:
    """The small yellow square's box at each of the 3 × 3 centres, row by row."""
    half = SIZES["small"] / 2
    return [(x - half, y - half, x + half, y + half, SQUARE) for y in CENTRES for x in CENTRES]


def layout_sweep(model, seeds: int, guidance: float, steps: int) -> tuple[dict, torch.Tensor]:
    layouts = [[box] for box in square_boxes() for _ in range(seeds)]
    samples = generate(model, seeds=list(range(seeds)) * len(CENTRES) ** 2, layouts=layouts,
                       guidance_scale=guidance, sampler="ddim", steps=steps)
    asked, found, ious = [], [], []
    for boxes, detections in zip(layouts, detections_of(samples)):
        box = boxes[0][:4]
        hit = largest(detections, "yellow")
        ious.append(box_iou(box, hit.box) if hit else 0.0)
        if hit:
            asked.append(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2))
            found.append(hit.centre)
    error = [float(np.hypot(a[0] - f[0], a[1] - f[1])) for a, f in zip(asked, found)]
    return ({"found": len(found), "n": len(layouts),
             "corr_x": correlation([a[0] for a in asked], [f[0] for f in found]),
             "corr_y": correlation([a[1] for a in asked], [f[1] for f in found]),
             "centre_error": float(np.mean(error)) if error else None,
             "box_iou": float(np.mean(ious))},
            samples)


def text_sweep(model, seeds: int, guidance: float, steps: int) -> tuple[dict, torch.Tensor]:
    prompts = [CAPTION.format(r) for r in RELATIONS for _ in range(seeds)]
    samples = generate(model, seeds=list(range(seeds)) * len(RELATIONS), prompts=prompts,
                       guidance_scale=guidance, sampler="ddim", steps=steps)
    detections = detections_of(samples)
    rows = {}
    for k, (relation, (dx, dy)) in enumerate(RELATIONS.items()):
        offsets = []
        for found in detections[k * seeds:(k + 1) * seeds]:
            red, blue = largest(found, "red"), largest(found, "blue")
            if red and blue:
                offsets.append((red.centre[0] - blue.centre[0], red.centre[1] - blue.centre[1]))
        holds = int(sum(ox * dx + oy * dy > 0 for ox, oy in offsets))
        rows[relation] = {"both_found": len(offsets), "n": seeds, "holds": holds,
                          "dx": float(np.mean([o[0] for o in offsets])) if offsets else None,
                          "dy": float(np.mean([o[1] for o in offsets])) if offsets else None}
    return {"relations": rows}, samples


def sweep_score(model, seeds: int, guidance: float, steps: int) -> float:
    """One number per model: layouts, the mean of the x and y correlations (0 where undefined); text,
    the share of all samples with both shapes found and the relation holding."""
    if model.conditioner.kind == "layout":
        scores, _ = layout_sweep(model, seeds, guidance, steps)
        return float(np.mean([scores["corr_x"] or 0.0, scores["corr_y"] or 0.0]))
    scores, _ = text_sweep(model, seeds, guidance, steps)
    rows = scores["relations"].values()
    return float(sum(r["holds"] for r in rows) / sum(r["n"] for r in rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="+", type=Path)
    p.add_argument("--seeds", type=int, default=8, help="samples per position or relation")
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument("--steps", type=int, default=20, help="DDIM steps")
    p.add_argument("--name", default="position-sweep", help="the report folder under reports/")
    args = p.parse_args()
    provenance = Provenance()
    results = {"seeds": args.seeds, "guidance": args.guidance, "steps": args.steps,
               "centres": list(CENTRES), "checkpoints": {}}
    images = []
    for i, checkpoint in enumerate(args.checkpoints):
        model = load_latent_diffusion(checkpoint)
        kind = model.conditioner.kind if model.conditioner is not None else None
        if kind not in ("layout", "text"):
            raise SystemExit(f"{checkpoint} is conditioned on {kind}; the sweep needs a layout or "
                             "text model of the shapes dataset")
        sweep = layout_sweep if kind == "layout" else text_sweep
        with torch.no_grad():
            scores, samples = sweep(model, args.seeds, args.guidance, args.steps)
        print(checkpoint, scores, flush=True)
        figure = f"samples-{i}.png"
        grid = to_uint8(samples)
        if kind == "layout":  # each position's requested box drawn over its row
            grid = torch.cat([draw_boxes(row, [box]) for row, box in
                              zip(grid.split(args.seeds), square_boxes())])
        save_image_grid(grid, REPORTS / args.name / figure, ncols=args.seeds)
        images.append(figure)
        results["checkpoints"][shown_path(checkpoint)] = {"kind": kind, "figure": figure, **scores}
    print(write_report(args.name, TITLE, results, render, provenance, images=tuple(images)))


def _number(value: float | None, spec: str = "+.2f") -> str:
    return "–" if value is None else format(value, spec)


def render(results: dict) -> list[str]:
    lines = [f"DDIM {results['steps']}, guidance {results['guidance']:g}, {results['seeds']} seeds "
             "per position or relation; centres and offsets in image sides (y down)."]
    layouts = {c: r for c, r in results["checkpoints"].items() if r["kind"] == "layout"}
    texts = {c: r for c, r in results["checkpoints"].items() if r["kind"] == "text"}
    if layouts:
        lines += ["", "One small yellow square at each of the 3 × 3 centres "
                  f"{', '.join(f'{c:g}' for c in results['centres'])}:", "",
                  "| checkpoint | found | corr x | corr y | centre error | box IoU |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {c} | {r['found']}/{r['n']} | {_number(r['corr_x'])} | {_number(r['corr_y'])} "
                  f"| {_number(r['centre_error'], '.3f')} | {r['box_iou']:.3f} |"
                  for c, r in layouts.items()]
    if texts:
        lines += ["", f"\"{CAPTION.format('REL')}\": mean red − blue offset, and the share of "
                  "samples where the relation holds along its axis:", "",
                  "| checkpoint | relation | both found | dx | dy | holds |", "|---|---|---|---|---|---|"]
        lines += [f"| {c} | {rel} | {s['both_found']}/{s['n']} | {_number(s['dx'])} | "
                  f"{_number(s['dy'])} | {s['holds']}/{s['both_found']} |"
                  for c, r in texts.items() for rel, s in r["relations"].items()]
    lines += [""] + [f"`{r['figure']}`: {c}, a row per position or relation."
                     for c, r in results["checkpoints"].items()]
    return lines


if __name__ == "__main__":
    main()
