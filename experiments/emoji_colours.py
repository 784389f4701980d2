"""Are "red heart" samples red and "flag France" samples blue-white-red? Mean colours of text-to-image
emoji samples against the real glyphs (`metrics/colour.py`).

For each checkpoint and prompt: --n samples (seeds 0 … n − 1; the README's grid is seeds 0–7) at
the README's settings (guidance 3, DDIM 50), reduced to the mean ink colour of three vertical
bands. Reported: the distance of those colours to the real glyph of the prompt (8-bit RGB units,
mean over bands), and how often a sample is nearer to it than to every glyph of its Unicode
subgroup that looks different (`metrics.colour.matches`: 25 hearts, 258 country flags); as scales,
the distance from the real glyph to its nearest different-looking sibling (e.g. orange heart) and to
the mean colour of its whole subgroup.

    python experiments/emoji_colours.py [CHECKPOINT ...] [--prompt "red heart" --prompt ...]
                                        [--n 32] [--name emoji-colours]

Without checkpoints: the bundled model.
"""

import argparse
from pathlib import Path

import torch

from latentdiff.checkpoints import load_latent_diffusion
from latentdiff.checkpoints.models import bundled_model
from latentdiff.data import to_model_range, to_uint8
from latentdiff.data.emoji import load_emoji
from latentdiff.evaluation.autoencoder import stored_data_config
from latentdiff.images import save_image_grid
from latentdiff.metrics.colour import DISTINCT, band_colours, colour_distance, matches
from latentdiff.pipelines.generate import generate
# experiments/ (the script's folder is on sys.path)
from report import REPORTS, Provenance, shown_path, write_report

TITLE = "Colours of emoji samples against the real glyphs"
PROMPTS = ("red heart", "flag France")
GUIDANCE, STEPS, SHOWN = 3.0, 50, 8


def hex_colour(rgb) -> str:
    return "#" + "".join(f"{round(255 * float(v)):02x}" for v in rgb)


def score_prompt(model, prompt: str, glyphs: torch.Tensor, names: list[str], real: int,
                 subgroup: list[int], n: int) -> tuple[dict, torch.Tensor]:
    """(the prompt's scores, its first SHOWN samples) against glyph `real`, among the glyphs of its
    `subgroup` (indices, `real` among them)."""
    with torch.no_grad():
        samples = generate(model, seeds=list(range(n)), prompts=[prompt] * n,
                           guidance_scale=GUIDANCE, sampler="ddim", steps=STEPS)
    colours = band_colours(samples)
    siblings = band_colours(glyphs[subgroup])  # the subgroup's glyphs, the prompt's among them
    target = siblings[subgroup.index(real)]
    distance = colour_distance(colours, target)
    matched = matches(colours, target, siblings).tolist()
    others = colour_distance(siblings, target)
    others[others <= DISTINCT] = float("inf")  # the glyph itself, and look-alikes
    return ({"real_colours": [hex_colour(c) for c in target],
             "sample_colours": [hex_colour(c) for c in colours.mean(0)],
             "distance_mean": distance.mean().item(), "distance_sd": distance.std().item(),
             "distance_per_sample": [round(d, 2) for d in distance.tolist()],
             "matched": sum(matched), "matched_shown": sum(matched[:SHOWN]), "n": n,
             "subgroup_size": len(subgroup),
             "nearest_sibling": names[subgroup[int(others.argmin())]],
             "nearest_sibling_distance": others.min().item(),
             "subgroup_mean_distance": colour_distance(siblings.mean(0), target).item()},
            samples[:SHOWN])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="*", type=Path)
    p.add_argument("--prompt", action="append", help=f"default: {', '.join(PROMPTS)}")
    p.add_argument("--n", type=int, default=32, help="samples per prompt (seeds 0 … n − 1)")
    p.add_argument("--name", default="emoji-colours", help="the report folder under reports/")
    args = p.parse_args()
    provenance = Provenance()
    prompts = args.prompt or list(PROMPTS)
    results = {"prompts": prompts, "guidance": GUIDANCE, "steps": STEPS, "distinct": DISTINCT,
               "checkpoints": {}}
    images = []
    for i, checkpoint in enumerate(args.checkpoints or [bundled_model()]):
        data_cfg = stored_data_config(checkpoint)
        data, names = load_emoji(data_cfg.image_size, data_cfg.path)
        glyphs = to_model_range(data.images)
        model = load_latent_diffusion(checkpoint)
        scores, shown = {}, []
        for prompt in prompts:
            real = names.index(prompt)
            subgroup = (data.labels == data.labels[real]).nonzero()[:, 0].tolist()
            scores[prompt], samples = score_prompt(model, prompt, glyphs, names, real, subgroup,
                                                       args.n)
            shown += [glyphs[real][None], samples]
            print(prompt, scores[prompt], flush=True)
        figure = f"samples-{i}.png"
        save_image_grid(to_uint8(torch.cat(shown)), REPORTS / args.name / figure, ncols=SHOWN + 1)
        images.append(figure)
        results["checkpoints"][shown_path(checkpoint)] = {
            "image_size": data_cfg.image_size, "figure": figure, "prompts": scores}
    print(write_report(args.name, TITLE, results, render, provenance, images=tuple(images)))


def render(results: dict) -> list[str]:
    lines = [f"Guidance {results['guidance']:g}, DDIM {results['steps']}; colours are the mean ink "
             "colour (pixels not near-white) of the left, middle and right thirds; distances are "
             "in 8-bit RGB units, averaged over the thirds. \"Nearer to real\": samples nearer to "
             "the prompt's glyph than to every glyph of its subgroup that looks different (more "
             f"than {results['distinct']:g} away from it).", "",
             "| checkpoint | px | prompt | real glyph | samples (mean) | distance to real | "
             "nearer to real | of the README's 8 | nearest different sibling (distance) | "
             "subgroup mean (distance) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for checkpoint, r in results["checkpoints"].items():
        for prompt, s in r["prompts"].items():
            lines.append(
                f"| {checkpoint} | {r['image_size']} | {prompt} | {' '.join(s['real_colours'])} | "
                f"{' '.join(s['sample_colours'])} | {s['distance_mean']:.1f} ± "
                f"{s['distance_sd']:.1f} | {s['matched']}/{s['n']} (subgroup of "
                f"{s['subgroup_size']}) | {s['matched_shown']}/8 | {s['nearest_sibling']} "
                f"({s['nearest_sibling_distance']:.1f}) | {s['subgroup_mean_distance']:.1f} |")
    lines += [""] + [f"`{r['figure']}`: {c} — per prompt, the real glyph, then samples of seeds 0–7."
                     for c, r in results["checkpoints"].items()]
    return lines


if __name__ == "__main__":
    main()
