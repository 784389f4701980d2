"""Consistency training against distillation at 1 and 2 steps, on small latent diffusion models:
the digits class model (`ldm-digits`) or an unconditional MNIST LDM-4 (the same configs on the
MNIST training digits).

The script trains the teacher (autoencoder, then LDM; resumed when its run folder exists), then one
student per method from it with the same number of steps each (lcd: latent consistency
distillation; progressive: DDIM halved from 64 steps to 2 and to 1; ect: consistency tuning from
the teacher; ict: consistency training from random weights), and scores every model at 1 and 2
steps (the teacher with DDIM, also at 50): class models by the classifier evaluator's accuracy on
the requested class and FD in its features against the training split; unconditional models by FD
in the classifier's features (MNIST is labelled). Real-vs-real baselines at the same n. Usage:

    python experiments/ct_vs_distill.py --dataset digits [--student-steps 1500] [--seeds 2]
    python experiments/ct_vs_distill.py --dataset mnist [--mnist ../shared/data/mnist]
"""

import argparse
from pathlib import Path

import numpy as np

from latentdiff.checkpoints import load_latent_diffusion
from latentdiff.config import (AutoencoderTrainConfig, DistillConfig, LatentDiffusionTrainConfig,
                               load_config)
from latentdiff.evaluation.conditional import evaluate_class_conditional
from latentdiff.evaluation.sample_quality import evaluate_checkpoint_quality
from latentdiff.train.autoencoder import train_autoencoder
from latentdiff.train.diffusion import train_latent_diffusion
from latentdiff.train.distill import distill
# experiments/ (the script's folder)
from few_step import run_minutes
from report import Provenance, shown_path, write_report

TITLE = "Consistency training against distillation at 1 and 2 steps"
# per method: config overrides, and the (steps, checkpoint) pairs scored
METHODS = {
    "lcd": ([], {1: "last", 2: "last"}),
    "progressive": (["num_intervals=64", "halvings=6", "train.keep_checkpoints=true"],
                    {1: "last", 2: "stage-5"}),
    "ect": ([], {1: "last", 2: "last"}),
    "ict": ([], {1: "last", 2: "last"}),
}


def teacher(root: Path, data: list[str], unconditional: bool) -> Path:
    ae = train_autoencoder(load_config(AutoencoderTrainConfig, "ae-kl-f4-digits",
                                       [f"train.out_dir={root / 'autoencoder'}", *data]),
                           resume=True)
    extra = ["unet.num_classes=null"] if unconditional else []
    return train_latent_diffusion(load_config(LatentDiffusionTrainConfig, "ldm-digits",
                                              [f"autoencoder={ae}",
                                               f"train.out_dir={root / 'ldm'}", *data, *extra]),
                                  resume=True)


def score(model, data_cfg, seeds, conditional: bool, **options) -> dict:
    if conditional:
        r = evaluate_class_conditional(model, data_cfg, seeds=seeds, **options)
        return {"accuracy": r.accuracy, "fd": r.fd, "fd_baseline": r.fd_baseline, "n": r.n}
    r = evaluate_checkpoint_quality(model, data_cfg, seeds=seeds, **options)
    return {"accuracy": None, "fd": [s.fd for s in r.rows[0].seeds], "fd_baseline": r.baseline.fd,
            "n": r.rows[0].seeds[0].n}


def render(results: dict) -> list[str]:
    rows = results["rows"]
    first = rows[0]
    kind = "class-conditional" if results["conditional"] else "unconditional"
    lines = [(f"Dataset: {results['dataset']} ({kind}); "
              f"teacher `{results['teacher']}` ({results['teacher_minutes']} min of training); each "
              f"student {results['student_steps']} steps of batch {results['batch_size']}. n = "
              f"{first['n']} samples per seed, {results['seeds']} seeds (mean ± sd); FD in the "
              f"classifier evaluator's features against the training split, real-vs-real "
              f"{first['fd_baseline']:.3f}."), "",
             "| model | steps | class accuracy | FD | FD / real-vs-real | training min |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        accuracy = "–" if r["accuracy"] is None else f"{r['accuracy']:.3f}"
        lines.append(f"| {r['model']} | {r['steps']} | {accuracy} | {np.mean(r['fd']):.3f} ± "
                     f"{np.std(r['fd']):.3f} | {np.mean(r['fd']) / r['fd_baseline']:.1f} | "
                     f"{r['minutes']} |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=["digits", "mnist"], default="digits")
    p.add_argument("--mnist", default="../shared/data/mnist", help="folder of MNIST IDX files")
    p.add_argument("--student-steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--root", type=Path, default=Path("runs/ct-vs-distill"))
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--name", default=None, help="report folder (default: ct-vs-distill-DATASET)")
    args = p.parse_args()
    provenance = Provenance()
    root = args.root / args.dataset
    data = ([] if args.dataset == "digits" else
            ["data.dataset=mnist", f"data.path={Path(args.mnist).resolve()}", "data.holdout=2000"])
    unconditional = args.dataset == "mnist"
    teacher_checkpoint = teacher(root, data, unconditional)
    teacher_model = load_latent_diffusion(teacher_checkpoint)
    data_cfg = load_config(LatentDiffusionTrainConfig, "ldm-digits",
                           ["autoencoder=x", *data]).data
    seeds = tuple(range(args.seeds))
    rows = []
    for steps in (50, 2, 1):
        rows.append({"model": "teacher (DDIM)", "steps": steps,
                     "minutes": run_minutes(root / "ldm"),
                     **score(teacher_model, data_cfg, seeds, not unconditional, sampler="ddim",
                             steps=steps)})
        print(rows[-1], flush=True)
    for method in args.methods:
        overrides, checkpoints = METHODS[method]
        out = root / method
        total = args.student_steps - args.student_steps % 6 if method == "progressive" \
            else args.student_steps
        checkpoint = distill(load_config(DistillConfig, None, [
            f"teacher={teacher_checkpoint}", f"train.out_dir={out}", f"train.max_steps={total}",
            f"train.batch_size={args.batch_size}", "train.lr=1e-4", "train.sample_every=0",
            f"train.checkpoint_every={total // 6 if method == 'progressive' else 500}",
            *overrides]), method, resume=True)
        for steps, which in checkpoints.items():
            path = checkpoint if which == "last" else (
                checkpoint.parent / f"step-{5 * (total // 6):07d}.safetensors")
            model = load_latent_diffusion(path)
            rows.append({"model": method, "steps": steps, "minutes": run_minutes(out),
                         "checkpoint": shown_path(path),
                         **score(model, data_cfg, seeds, not unconditional, steps=steps)})
            print(rows[-1], flush=True)
    results = {"dataset": args.dataset, "conditional": not unconditional,
               "teacher": shown_path(teacher_checkpoint),
               "teacher_minutes": round(run_minutes(root / "ldm")
                                        + run_minutes(root / "autoencoder"), 2),
               "student_steps": args.student_steps, "batch_size": args.batch_size,
               "seeds": args.seeds, "rows": rows}
    print(write_report(args.name or f"ct-vs-distill-{args.dataset}", TITLE, results, render,
                       provenance))


if __name__ == "__main__":
    main()
