"""Spectral Diffusion at this project's scale (MNIST LDM-4, unconditional): a slim wavelet-gated
UNet against a plain slim UNet of about the same FLOPs and against the teacher, each trained on the
data alone and with spectrum-aware distillation from the teacher.

Teacher: the unconditional MNIST `ldm-digits` (64 channels, 1400 steps; the guidance family's).
Students: 32 channels and parameter-free resampling (`unet.conv_resample=false`: pooling and
nearest upsampling, or the gated Haar subbands; about 1/5 of the teacher's GFLOPs), plain or with
wavelet-gated resampling (`unet.wavelet_gates`), trained 1400 steps at the teacher's recipe, on the
data alone or with the teacher term of weight 1 at α = 1 (inverse spectral magnitude, the paper's) or
α = 0 (the plain output MSE); and, on the data alone, 4200 steps (3× the teacher's steps at 1/5 of
its FLOPs per step: about 0.6× its training compute). Each model:
n samples per training seed, dpmpp_2m 20 steps; FD in the evaluator's features against the
training split; the share of spectral energy above half the Nyquist frequency of the 32×32 samples
against the held-out images'; GFLOPs per evaluation; the seconds to sample n images. Mean ± sd
over the training seeds.

    python experiments/spectral.py     # → reports/spectral-mnist

`--students NAME…` chooses the students (default: all); with `--train-only` they are trained and
nothing else, so that two processes can train disjoint students; a later run without it reuses
every finished run folder.
"""

import argparse
import time
from pathlib import Path

import numpy as np

from latentdiff.checkpoints import load_latent_diffusion
from latentdiff.config import LatentDiffusionTrainConfig, load_config
from latentdiff.data import load_dataset, split_holdout, to_model_range
from latentdiff.metrics.classifier import classify
from latentdiff.metrics.frechet import FeatureStats, frechet_distance
from latentdiff.metrics.spectrum import high_frequency_share, radial_power_spectrum
from latentdiff.pipelines import generate
from latentdiff.train.diffusion import train_latent_diffusion
# experiments/ (the script's folder)
from few_step import run_minutes
from guidance_family import Scorer, train_first_stage, train_ldm, trained
from report import Provenance, shown_path, write_report

TITLE = "Spectral Diffusion on MNIST: a slim wavelet-gated student against a plain one and the teacher"
DATA = ("data.dataset=mnist", "data.path=../shared/data/mnist")
SLIM = ("unet.model_channels=32", "unet.conv_resample=false")
GATED = (*SLIM, "unet.wavelet_gates=true")
LONG = ("train.max_steps=4200",)
STUDENTS = {  # name → overrides ("distilled": with the teacher term)
    "plain slim": SLIM,
    "plain slim, distilled α=1": (*SLIM, "distillation.alpha=1"),
    "plain slim, distilled α=0": (*SLIM, "distillation.alpha=0"),
    "plain slim, 3× steps": (*SLIM, *LONG),
    "gated slim": GATED,
    "gated slim, distilled α=1": (*GATED, "distillation.alpha=1"),
    "gated slim, distilled α=0": (*GATED, "distillation.alpha=0"),
    "gated slim, 3× steps": (*GATED, *LONG),
}


def evaluate(model, seed: int, score: Scorer) -> dict:
    start = time.perf_counter()
    images = generate(model, seeds=[seed * score.n + i for i in range(score.n)],
                      sampler="dpmpp_2m", steps=20)
    seconds = time.perf_counter() - start
    features = classify(score.evaluator, images)[1]
    return {"fd": frechet_distance(FeatureStats.of(features), score.reference),
            "high_frequency": high_frequency_share(images),
            "spectrum": radial_power_spectrum(images).tolist(), "sampling_s": seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--n", type=int, default=400)
    p.add_argument("--root", type=Path, default=Path("runs/guidance-family/mnist"))
    p.add_argument("--students", nargs="+", choices=list(STUDENTS), default=list(STUDENTS),
                   metavar="NAME", help=f"the students to train and compare (default: all: "
                                        f"{', '.join(STUDENTS)})")
    p.add_argument("--train-only", action="store_true", help="train them; no scores, no report")
    p.add_argument("--report", default="spectral-mnist", help="the report folder's name")
    args = p.parse_args()
    provenance = Provenance()
    ae = train_first_stage(args.root, DATA)
    teacher = train_ldm(args.root, ae, "unconditional", DATA, "unet.num_classes=null")

    def student(name: str, seed: int) -> Path:
        distilled = [f"distillation.teacher={teacher}"] if "distilled" in name else []
        return trained(load_config(LatentDiffusionTrainConfig, "ldm-digits", [
            f"autoencoder={ae}", *DATA, "unet.num_classes=null", *STUDENTS[name], *distilled,
            f"train.seed={seed + 1}",
            f"train.out_dir={args.root / 'spectral' / name.replace(' ', '').replace(',', '-')}"
            f"-s{seed}"]), train_latent_diffusion)

    if args.train_only:
        for name in args.students:
            for seed in range(args.seeds):
                student(name, seed)
        return
    score = Scorer(args.n, DATA)
    data_cfg = load_config(LatentDiffusionTrainConfig, "ldm-digits", ["autoencoder=x", *DATA]).data
    heldout = split_holdout(load_dataset(data_cfg), data_cfg.holdout, data_cfg.split_seed)[1]
    real = to_model_range(heldout.images[:args.n])
    teacher_model = load_latent_diffusion(teacher)
    cost = teacher_model.network_cost()
    rows = [{"model": "teacher", "gflops": cost.gflops, "parameters": cost.parameters,
             "points": [evaluate(teacher_model, seed, score) for seed in range(args.seeds)],
             "runs": [shown_path(teacher)], "loop_minutes": [run_minutes(teacher.parent.parent)]}]
    print({k: v for k, v in rows[-1].items() if k != "points"}, flush=True)
    for name in [s for s in STUDENTS if s in args.students]:
        row = {"model": name, "overrides": list(STUDENTS[name]), "points": [], "runs": [],
               "loop_minutes": []}
        for seed in range(args.seeds):
            last = student(name, seed)
            model = load_latent_diffusion(last)
            row["points"].append(evaluate(model, seed, score))
            row["runs"].append(shown_path(last))
            row["loop_minutes"].append(run_minutes(last.parent.parent))
            cost = model.network_cost()
            row.update(gflops=cost.gflops, parameters=cost.parameters)
        rows.append(row)
        print({k: v for k, v in row.items() if k != "points"},
              [(round(q["fd"], 3), round(q["high_frequency"], 4)) for q in row["points"]], flush=True)
    results = {"seeds": args.seeds, "n": args.n, "baseline": score.baseline,
               "real_high_frequency": high_frequency_share(real),
               "real_spectrum": radial_power_spectrum(real).tolist(),
               "teacher": shown_path(teacher), "rows": rows}
    print(write_report(args.report, TITLE, results, render, provenance, plot=plot))


def _mean(values, digits: int = 3) -> str:
    return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"


def render(results: dict) -> list[str]:
    teacher = results["rows"][0]
    t_fd, t_flops = np.mean([p["fd"] for p in teacher["points"]]), teacher["gflops"]
    lines = [f"MNIST, unconditional LDM-4 (3×8×8 latents); {results['seeds']} training seeds, "
             f"n = {results['n']} samples each, dpmpp_2m 20 steps. FD in the evaluator's features "
             f"against the training split (real-vs-real at the same n: "
             f"{results['baseline']['fd']:.3f}). High-frequency share: the spectral energy above "
             "half the Nyquist frequency of the 32×32 images (held-out real images: "
             f"{results['real_high_frequency']:.4f}). Sampling: seconds for the n images "
             "(20 steps and the decoder) on this machine.", "",
             "| model | parameters | GFLOPs / eval | vs teacher | FD | FD vs teacher | "
             "high-frequency share | sampling s |", "|---|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        fd = [p["fd"] for p in r["points"]]
        lines.append(f"| {r['model']} | {r['parameters'] / 1e6:.2f} M | {r['gflops']:.4f} | "
                     f"{r['gflops'] / t_flops:.2f}× | {_mean(fd)} | {np.mean(fd) / t_fd:.2f}× | "
                     f"{_mean([p['high_frequency'] for p in r['points']], 4)} | "
                     f"{np.mean([p['sampling_s'] for p in r['points']]):.1f} |")
    minutes = ", ".join(f"{r['model']} {'/'.join(f'{m:g}' for m in r['loop_minutes'] if m)}"
                        for r in results["rows"])
    lines += ["", f"Training-loop minutes: {minutes}."]
    return lines


def plot(plt, results: dict):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    radii = np.arange(1, len(results["real_spectrum"]))  # radius 0 (the mean) is not drawn
    ax.plot(radii, results["real_spectrum"][1:], color="black", label="held-out images")
    for r in results["rows"]:
        spectrum = np.mean([p["spectrum"] for p in r["points"]], axis=0)
        ax.plot(radii, spectrum[1:], label=r["model"])
    ax.set_yscale("log")
    ax.set_xlabel("radius (cycles per image)")
    ax.set_ylabel("radially averaged power")
    ax.legend(fontsize=8)
    ax.set_title(TITLE, fontsize=9)
    return fig


if __name__ == "__main__":
    main()
