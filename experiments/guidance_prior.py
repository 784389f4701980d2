"""An unconditional prior for super-resolution and inpainting: PSNR, SSIM and FD against the held-out
originals as the prior's weight changes, over ≥ 3 seeds.

A pretrained unconditional model D_u of the same latent space mixed into every step of a
conditional one: D̃ = (1 − w)·D_c(x; σ, c) + w·D_u(x; σ), the score of p(x | c)^(1−w)·p(x)^w
(`guidance.PriorDenoiser`), at every step or only for σ in an interval. w > 0 pulls the samples
towards the unconditional model; w < 0 guides away from it (classifier-free guidance at s = 1 − w
with the separate model as the unconditional branch).

Models (trained once, resumed when their run folders exist, under --root, which it shares with
`guidance_family.py` on the same data): the KL-f4 autoencoder, the unconditional `ldm-digits` (the
prior), and on the same latents a ×4 super-resolution model and an inpainting model (`ldm-digits`
with conditioning.kind=superres / inpaint, no labels).

Scores as in `restoration.py`: the n held-out originals (drawn at random), PSNR and SSIM against them
(PSNR inside the holes for inpainting, the known pixels pasted back), FD between outputs and
originals in the data classifier's features; bicubic upsampling, the autoencoder's reconstruction
and a mean-colour fill beside them; DDIM 20 steps; mean ± sd over the seeds.

    python experiments/guidance_prior.py [--n 400] [--seeds 3]   # MNIST → reports/guidance-prior
"""

import argparse
from pathlib import Path

import numpy as np
import torch

from latentdiff.checkpoints import load_latent_diffusion
from latentdiff.conditioning.spatial import paste_unmasked, random_masks
from latentdiff.data import to_model_range, to_uint8
from latentdiff.evaluation.restoration import evaluate_superres
from latentdiff.images import save_image_grid
from latentdiff.metrics.features import state_digest
from latentdiff.metrics.reconstruction import score_reconstructions
from latentdiff.pipelines import generate
from latentdiff.pipelines.guides import Guides
# experiments/ (the script's folder)
from few_step import run_minutes
from guidance_family import train_first_stage, train_ldm
from report import REPORTS, Provenance, shown_path, write_report
from restoration import evaluation_data, hole_psnr, mean_fill, mean_sd

NAME = "guidance-prior"
TITLE = "An unconditional prior for super-resolution and inpainting"
MNIST = ("data.dataset=mnist", "data.path=../shared/data/mnist")
INTERVALS = {"every step": None}  # name → σ interval (add e.g. "σ ≥ 1": (1.0, 1000.0))
WEIGHTS = {"every step": (0.2, -0.25, -0.5, -1.0)}
SHOWN = -0.5  # inpainting.png: the prior at this weight, every step
SAMPLING = {"sampler": "ddim", "steps": 20}


def train_models(root: Path, data: tuple[str, ...]) -> dict:
    ae = train_first_stage(root, data)
    return {"autoencoder": ae,
            "prior": train_ldm(root, ae, "unconditional", data, "unet.num_classes=null"),
            # in_channels: the latent's 3 + the low-resolution image's 1
            "superres": train_ldm(root, ae, "superres", data, "unet.num_classes=null",
                                  "conditioning.kind=superres", "conditioning.sr_factor=4",
                                  "unet.in_channels=4"),
            # the latent's 3 + E(x ⊙ (1 − m))'s 3 + the mask's 1
            "inpaint": train_ldm(root, ae, "inpaint", data, "unet.num_classes=null",
                                 "conditioning.kind=inpaint", "unet.in_channels=7")}


def settings(prior) -> list[dict]:
    """Every point of the sweep: its weight, interval name, Guides (None: the plain model, first)
    and σ interval."""
    out = [{"weight": 0.0, "interval": "—", "guides": None, "sigmas": None}]
    for name, sigmas in INTERVALS.items():
        out += [{"weight": w, "interval": name, "guides": Guides(prior=prior, prior_weight=w),
                 "sigmas": sigmas} for w in WEIGHTS[name]]
    return out


def superres(model_path: Path, prior, n: int, seeds: tuple[int, ...]) -> dict:
    model, data_cfg, _, classifier, baseline = evaluation_data(model_path, n)
    rows, fixed = [], None
    for s in settings(prior):
        report = evaluate_superres(model, data_cfg, seeds=seeds, n=n, guides=s["guides"],
                                   guidance_interval=s["sigmas"], **SAMPLING)
        ldm = [r for r in report.rows if r.name.startswith("LDM-SR")]
        rows.append({"weight": s["weight"], "interval": s["interval"],
                     **{k: [getattr(r, k) for r in ldm] for k in ("psnr", "ssim", "rfd")}})
        fixed = [{k: getattr(r, k) for k in ("name", "psnr", "ssim", "rfd")}
                 for r in report.rows if r not in ldm]
        print(rows[-1], flush=True)
    return {"checkpoint": shown_path(model_path), "factor": report.factor, "n": n,
            "baseline": baseline, "evaluator": f"classifier-{state_digest(classifier)}",
            "rows": rows, "references": fixed}


def inpainting(model_path: Path, prior, n: int, seeds: tuple[int, ...]) -> dict:
    model, _, held, classifier, baseline = evaluation_data(model_path, n)
    originals = held.images[:n]
    x = to_model_range(originals)
    masks = random_masks(n, x.shape[-1], torch.Generator().manual_seed(0))
    side = x.shape[-1] // model.codec.downsampling_factor
    spatial = model.conditioner.spatial((side, side), mask=masks,
                                        masked_latent=model.codec.encode(x * (1 - masks)))
    rows, shown = [], [x[:8], (x * (1 - masks) + masks)[:8]]  # holes shown white
    for s in settings(prior):
        scores = []
        for seed in seeds:
            out = generate(model, [seed * n + i for i in range(n)], spatial=spatial,
                           guides=s["guides"], guidance_interval=s["sigmas"], **SAMPLING)
            out = to_model_range(paste_unmasked(originals, to_uint8(out), masks))
            scores.append({**score_reconstructions(x, out, classifier.features),
                           "hole_psnr": hole_psnr(x, out, masks)})
            if seed == seeds[0] and s["sigmas"] is None and s["weight"] in (0, SHOWN):
                shown.append(out[:8])
        rows.append({"weight": s["weight"], "interval": s["interval"],
                     **{k: [r[k] for r in scores] for k in ("hole_psnr", "ssim", "rfd")}})
        print(rows[-1], flush=True)
    filled = mean_fill(x, masks)
    fill = score_reconstructions(x, filled, classifier.features)
    save_image_grid(to_uint8(torch.cat(shown)), REPORTS / NAME / "inpainting.png", ncols=8)
    return {"checkpoint": shown_path(model_path), "n": n, "baseline": baseline,
            "mask_fraction": masks.mean().item(),
            "evaluator": f"classifier-{state_digest(classifier)}", "rows": rows,
            "references": [{"name": "mean-colour fill", "hole_psnr": hole_psnr(x, filled, masks),
                            "ssim": fill["ssim"], "rfd": fill["rfd"]}]}


def render(results: dict) -> list[str]:
    """The report's body from its raw results."""
    lines = [f"Data: `{' '.join(results['data'])}`. Prior: `{results['models']['prior']}`; "
             f"{SAMPLING['sampler']} {SAMPLING['steps']} steps, {results['seeds']} seeds. "
             "w = 0 is the conditional model alone. Training (loop minutes): "
             + ", ".join(f"{k} {v} min" for k, v in results["minutes"].items() if v is not None)
             + ".", ""]
    sr, inp = results["superres"], results["inpainting"]
    for title, r, psnr in ((f"Super-resolution ×{sr['factor']}", sr, "psnr"),
                           ("Inpainting", inp, "hole_psnr")):
        head = "PSNR in the holes" if psnr == "hole_psnr" else "PSNR"
        extra = (f", one mask each (1-3 random rectangles, {r['mask_fraction']:.0%} of the pixels)"
                 if psnr == "hole_psnr" else "")
        lines += [f"## {title} (`{r['checkpoint']}`)", "",
                  f"{r['n']} held-out images{extra}. Real-vs-real FD (the originals vs as many "
                  f"training images): {r['baseline']:.2f}. Evaluator `{r['evaluator']}`.", "",
                  f"| prior weight w | σ interval | {head} | SSIM | FD to originals |",
                  "|---|---|---|---|---|"]
        lines += [f"| {row['weight']:g} | {row['interval']} | {mean_sd(row[psnr])} | "
                  f"{np.mean(row['ssim']):.3f} ± {np.std(row['ssim']):.3f} | {mean_sd(row['rfd'])} |"
                  for row in r["rows"]]
        lines += [f"| {ref['name']} | – | {ref[psnr]:.2f} | {ref['ssim']:.3f} | {ref['rfd']:.2f} |"
                  for ref in r["references"]]
        lines.append("")
    lines += ["`inpainting.png`, rows: originals, masked inputs (holes white), the inpainting "
              f"model alone, with the prior at w = {results['shown']:g} (every step); seed 0."]
    return lines


def plot(plt, results: dict):
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, (task, psnr) in zip(axes, (("superres", "psnr"), ("inpainting", "hole_psnr"))):
        rows = results[task]["rows"]
        for name in results["intervals"]:
            points = [rows[0]] + [r for r in rows if r["interval"] == name]
            x = [np.mean(r[psnr]) for r in points]
            ax.plot(x, [np.mean(r["rfd"]) for r in points], marker="o", label=f"prior, {name}")
            for r, xi, yi in zip(points, x, [np.mean(r["rfd"]) for r in points]):
                ax.annotate(f"{r['weight']:g}", (xi, yi), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
        ax.set_xlabel("PSNR in the holes (dB)" if psnr == "hole_psnr" else "PSNR (dB)")
        ax.set_ylabel("FD to the originals")
        ax.set_title(task, fontsize=10)
        ax.legend(fontsize=8)
    fig.suptitle(TITLE + " (numbers: w)", fontsize=10)
    return fig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=400)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--root", type=Path, default=Path("runs/guidance-family/mnist"))
    p.add_argument("--data", nargs="*", default=list(MNIST), metavar="KEY=VALUE",
                   help="data overrides of every model (default: MNIST in ../shared/data)")
    args = p.parse_args()
    provenance = Provenance()
    data = tuple(args.data)
    paths = train_models(args.root, data)
    torch.set_grad_enabled(False)
    prior = load_latent_diffusion(paths["prior"])
    seeds = tuple(range(args.seeds))
    results = {"n": args.n, "seeds": args.seeds, "data": list(data),
               "intervals": INTERVALS, "shown": SHOWN, "models": {k: shown_path(v) for k, v in paths.items()},
               "minutes": {k: run_minutes(Path(v).parent.parent) for k, v in paths.items()},
               "superres": superres(paths["superres"], prior, args.n, seeds),
               "inpainting": inpainting(paths["inpaint"], prior, args.n, seeds)}
    print(write_report(NAME, TITLE, results, render, provenance, plot=plot,
                       images=("inpainting.png",)))


if __name__ == "__main__":
    main()
