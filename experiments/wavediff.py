"""WaveDiff (wavelet diffusion GAN) against the project's distilled students at equal steps, on an
unconditional MNIST LDM-4's latent space.

Everything shares one first stage: the teacher (`--teacher`, an unconditional latent diffusion
model, e.g. `ldm-digits` with unet.num_classes=null trained on MNIST) gives the autoencoder that
WaveDiff trains on and the model the students are distilled from. The script trains (resuming any
run folder that has not finished):
- WaveDiff with T = `--chains` steps, `--train-seeds` training seeds each (`wavediff-digits`,
  `--wavediff-steps` steps);
- the plain DDGAN (generator.wavelet=false, the same widths on the latents themselves) at
  T = `--plain`: the ablation that isolates the wavelets;
- the students `--methods` (latent consistency distillation, consistency tuning) with
  `--student-steps` steps each;
then scores every model at 1, 2 and 4 steps (WaveDiff and DDGAN at their own T; the teacher with
DDIM, also at 50) by FD in the classifier evaluator's features against the training split (n
samples; WaveDiff: one sampling seed per training seed; students and teacher: `--train-seeds`
sampling seeds), with the sampling cost (GFLOPs of the networks per sample) and the training
minutes. Usage:

    python experiments/wavediff.py --teacher PATH [--train-only] [--arms wavediff-t4 …]
"""

import argparse
from pathlib import Path

import numpy as np
import torch

from latentdiff.checkpoints import load_latent_diffusion
from latentdiff.checkpoints.io import read_metadata
from latentdiff.checkpoints.wavediff import load_wavediff
from latentdiff.config import DistillConfig, load_config
from latentdiff.config_systems import WaveDiffTrainConfig
from latentdiff.data import to_uint8
from latentdiff.evaluation.autoencoder import stored_data_config
from latentdiff.evaluation.sample_quality import draw_samples, evaluate_checkpoint_quality
from latentdiff.images import save_image_grid
from latentdiff.train.distill import distill
from latentdiff.train.wavediff import train_wavediff
# experiments/ (the script's folder)
from few_step import run_minutes
from report import REPORTS, Provenance, shown_path, write_report

TITLE = "WaveDiff against distilled students at 1, 2 and 4 steps (MNIST latents)"
STEPS = (1, 2, 4)
GRID = 16  # samples per model in the figure


def arms(args) -> dict[str, list[str]]:
    """{run name: train-wavediff overrides} of every GAN chain."""
    out = {}
    for plain, chains in ((False, args.chains), (True, args.plain)):
        for T in chains:
            for seed in range(args.train_seeds):
                name = f"{'ddgan' if plain else 'wavediff'}-t{T}-s{seed + 1}"
                out[name] = [f"num_timesteps={T}", f"train.seed={seed + 1}",
                             *(["generator.wavelet=false"] if plain else [])]
    return out


def train_chain(args, name: str, overrides: list[str]) -> Path:
    cfg = load_config(WaveDiffTrainConfig, "wavediff-digits", [
        f"autoencoder={args.teacher}", f"train.out_dir={args.root / name}",
        f"train.max_steps={args.wavediff_steps}", f"train.checkpoint_every={args.wavediff_steps}",
        f"train.sample_every={args.wavediff_steps}", *data_overrides(args.teacher), *overrides])
    last = Path(cfg.train.out_dir) / "checkpoints" / "last.safetensors"
    if last.is_file() and read_metadata(last)["train_state"]["step"] == args.wavediff_steps:
        return last
    return train_wavediff(cfg, resume=True)


def data_overrides(teacher: Path) -> list[str]:
    """The teacher's training data as config overrides."""
    data = stored_data_config(teacher)
    return [f"data.dataset={data.dataset}", f"data.path={Path(data.path).resolve()}",
            f"data.image_size={data.image_size}", f"data.holdout={data.holdout}"]


def train_student(args, method: str) -> Path:
    out = args.root / method
    return distill(load_config(DistillConfig, None, [
        f"teacher={args.teacher}", f"train.out_dir={out}", f"train.max_steps={args.student_steps}",
        "train.batch_size=64", "train.lr=1e-4", "train.sample_every=0",
        f"train.checkpoint_every={args.student_steps}"]), method, resume=True)


def fds(model, data_cfg, n: int, seeds, **options) -> tuple[list[float], float, int]:
    """FD per sampling seed, and the real-vs-real baseline's FD and size."""
    r = evaluate_checkpoint_quality(model, data_cfg, n=n, seeds=seeds, **options)
    return [s.fd for s in r.rows[0].seeds], r.baseline.fd, r.baseline.n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", type=Path, required=True)
    p.add_argument("--root", type=Path, default=Path("runs/wavediff"))
    p.add_argument("--chains", type=int, nargs="+", default=list(STEPS))
    p.add_argument("--plain", type=int, nargs="*", default=[4])
    p.add_argument("--methods", nargs="*", default=["lcd", "ect"])
    p.add_argument("--train-seeds", type=int, default=2)
    p.add_argument("--wavediff-steps", type=int, default=2500)
    p.add_argument("--student-steps", type=int, default=800)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--train-only", action="store_true")
    p.add_argument("--arms", nargs="*", default=None,
                   help="train only these runs (names as wavediff-t4-s1, ddgan-t4-s2, lcd)")
    p.add_argument("--name", default="wavediff-mnist")
    args = p.parse_args()
    provenance = Provenance()
    chains = arms(args)
    for name, overrides in chains.items():
        if args.arms is None or name in args.arms:
            train_chain(args, name, overrides)
    for method in args.methods:
        if args.arms is None or method in args.arms:
            train_student(args, method)
    if args.train_only:
        return
    data_cfg = stored_data_config(args.teacher)
    seeds = tuple(range(args.train_seeds))
    teacher = load_latent_diffusion(args.teacher)
    teacher_gflops = teacher.network_cost().gflops
    rows, figure_rows, baseline_n = [], [], 0

    def grid_rows(model, label: str, **options) -> None:
        figure_rows.append((label, draw_samples(model, GRID, 0, {}, 1.0, **options)))

    def scored(model, seeds, **options) -> tuple[list[float], float]:
        nonlocal baseline_n
        fd, base, baseline_n = fds(model, data_cfg, args.n, seeds, **options)
        return fd, base

    def add(model: str, steps: int, fd: list[float], baseline: float, gflops: float,
            minutes: float | None, **extra) -> None:
        rows.append({"model": model, "steps": steps, "fd": fd, "fd_baseline": baseline,
                     "gflops_per_sample": round(gflops * steps, 4), "training_minutes": minutes,
                     **extra})
        print(rows[-1], flush=True)

    for steps in (50, *STEPS):
        fd, base = scored(teacher, seeds, sampler="ddim", steps=steps)
        add("teacher (DDIM)", steps, fd, base, teacher_gflops,
            run_minutes(args.teacher.parent.parent))
        if steps in (50, 4):
            grid_rows(teacher, f"teacher DDIM {steps}", sampler="ddim", steps=steps)
    for method in args.methods:
        student = load_latent_diffusion(args.root / method / "checkpoints" / "last.safetensors")
        for steps in STEPS:
            fd, base = scored(student, seeds, steps=steps)
            add(method, steps, fd, base, teacher_gflops, run_minutes(args.root / method))
        grid_rows(student, f"{method} 4 steps", steps=4)
    for kind, Ts in (("wavediff", args.chains), ("ddgan", args.plain)):
        for T in Ts:
            fd, base, minutes = [], None, []
            for seed in range(args.train_seeds):
                run = args.root / f"{kind}-t{T}-s{seed + 1}"
                model = load_wavediff(run / "checkpoints" / "last.safetensors")
                # one sampling seed per training seed: the spread is over training seeds
                one, base = scored(model, (seed,))
                fd += one
                minutes.append(run_minutes(run))
                if seed == 0:
                    grid_rows(model, f"{kind} T={T}")
            cost = model.network_cost()
            add(kind, T, fd, base, cost.gflops, round(float(np.mean(minutes)), 2),
                parameters=cost.parameters)
    figure = REPORTS / args.name / "samples.png"
    figure.parent.mkdir(parents=True, exist_ok=True)
    save_image_grid(to_uint8(torch.cat([images for _, images in figure_rows]) / 127.5 - 1), figure,
                    ncols=GRID)
    results = {"teacher": shown_path(args.teacher), "n": args.n, "train_seeds": args.train_seeds,
               "wavediff_steps": args.wavediff_steps, "student_steps": args.student_steps,
               "baseline_n": baseline_n,
               "figure_rows": [label for label, _ in figure_rows], "rows": rows}
    print(write_report(args.name, TITLE, results, render, provenance, images=("samples.png",)))


def render(results: dict) -> list[str]:
    base = results["rows"][0]["fd_baseline"]
    lines = [f"Teacher `{results['teacher']}` (its autoencoder is every model's first stage); "
             f"WaveDiff and DDGAN {results['wavediff_steps']} training steps of batch 64, "
             f"{results['train_seeds']} training seeds (one sampling seed each); students "
             f"{results['student_steps']} distillation steps, {results['train_seeds']} sampling "
             f"seeds; teacher {results['train_seeds']} sampling seeds. n = {results['n']} samples "
             "per seed; FD in the classifier evaluator's features against the training split "
             f"(mean ± sd); real-vs-real: {results['baseline_n']} held-out images, FD {base:.3f} "
             "(a smaller sample than the models' n, so with a larger bias: a floor only in "
             "order of magnitude). "
             "GFLOPs: the networks' "
             "per sample (steps × one evaluation; the decoder, the same for all, left out).", "",
             "| model | steps | FD | GFLOPs / sample | training min |", "|---|---|---|---|---|"]
    for r in sorted(results["rows"], key=lambda r: (r["steps"], r["model"])):
        minutes = "–" if r["training_minutes"] is None else f"{r['training_minutes']:.1f}"
        lines.append(f"| {r['model']} | {r['steps']} | {np.mean(r['fd']):.2f} ± "
                     f"{np.std(r['fd']):.2f} | {r['gflops_per_sample']:.3f} | {minutes} |")
    lines += ["", "Samples (`samples.png`), one row each, seeds 0–15: "
              + "; ".join(results["figure_rows"]) + "."]
    return lines


if __name__ == "__main__":
    main()
