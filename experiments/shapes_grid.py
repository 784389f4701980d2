"""A grid of a shapes model's samples for the docs: a row per held-out condition, a column per seed;
layout models get their boxes drawn over the samples. Each row is scored by the shapes checker (mean
box IoU of the row's samples, or how many match the caption).

    python experiments/shapes_grid.py CHECKPOINT [--rows 8] [--seeds 8] [--guidance 2] [--steps 50]
                                      [--scale 3] [--name shapes-grid]

Rows are the first --rows held-out conditions in the evaluation's order (`ImageData.sample`), so the
grid shows conditions the model never trained on; sampling is DDIM --steps at --guidance.
"""

import argparse

import torch

from latentdiff.checkpoints import load_latent_diffusion
from latentdiff.data import to_uint8
from latentdiff.evaluation.autoencoder import stored_data_config
from latentdiff.images import draw_boxes, save_image_grid
from latentdiff.metrics.shapes import layout_iou, matches_caption
from latentdiff.pipelines.generate import generate
# experiments/ (the script's folder is on sys.path)
from position_sweep import detections_of, held_out_scenes
from report import REPORTS, Provenance, shown_path, write_report

TITLE = "Samples of a shapes model on held-out conditions"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--rows", type=int, default=8, help="held-out conditions")
    p.add_argument("--seeds", type=int, default=8, help="samples per condition")
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument("--steps", type=int, default=50, help="DDIM steps")
    p.add_argument("--scale", type=int, default=3, help="enlargement of the 32 px samples")
    p.add_argument("--name", default="shapes-grid", help="the report folder under reports/")
    args = p.parse_args()
    provenance = Provenance()
    model = load_latent_diffusion(args.checkpoint)
    layout = model.conditioner.kind == "layout"
    scenes = held_out_scenes(stored_data_config(args.checkpoint), args.rows)
    rows, grid = [], []
    for i, scene in enumerate(scenes):
        condition = ({"layouts": [[tuple(map(float, b)) for b in scene.boxes()]] * args.seeds} if layout
                     else {"prompts": [scene.caption()] * args.seeds})
        with torch.no_grad():
            samples = generate(model, [i * args.seeds + s for s in range(args.seeds)],
                               guidance_scale=args.guidance, sampler="ddim", steps=args.steps, **condition)
        found = detections_of(samples)
        # nearest-neighbour enlarged for the docs, boxes drawn after (1 px at the enlarged size)
        images = to_uint8(samples).repeat_interleave(args.scale, 2).repeat_interleave(args.scale, 3)
        score = (sum(layout_iou(scene, d) for d in found) / args.seeds if layout
                 else sum(matches_caption(scene, d) for d in found))
        rows.append({"caption": scene.caption(), "boxes": scene.boxes().tolist(), "score": score})
        grid.append(draw_boxes(images, scene.boxes()) if layout else images)
        print(rows[-1], flush=True)
    save_image_grid(torch.cat(grid), REPORTS / args.name / "grid.png", ncols=args.seeds)
    results = {"checkpoint": shown_path(args.checkpoint), "kind": model.conditioner.kind,
               "guidance": args.guidance, "steps": args.steps, "seeds": args.seeds, "rows": rows}
    print(write_report(args.name, TITLE, results, render, provenance, images=("grid.png",)))


def render(results: dict) -> list[str]:
    layout = results["kind"] == "layout"
    lines = [f"`{results['checkpoint']}`, DDIM {results['steps']}, guidance {results['guidance']:g}, "
             f"seeds in columns{', boxes drawn over the samples' if layout else ''}:", "",
             "| row | held-out condition | " + ("mean box IoU" if layout else "samples matching") + " |",
             "|---|---|---|"]
    for i, row in enumerate(results["rows"], 1):
        what = (", ".join(f"({', '.join(f'{v:.2f}' for v in b[:4])}) class {int(b[4])}" for b in row["boxes"])
                + f" — {row['caption']}" if layout else row["caption"])
        score = f"{row['score']:.3f}" if layout else f"{row['score']}/{results['seeds']}"
        lines.append(f"| {i} | {what} | {score} |")
    return lines


if __name__ == "__main__":
    main()
