"""Classifier-free guidance at small scale: sample quality (FD) against condition alignment over the
guidance scale.

The paper's text-to-image and class-conditional results trade FD for alignment through s (Sec. 4.3,
Fig. 14, Tab. 2). For each guidance scale and sampling seed, one sample per held-out condition of a
text or layout model; alignment under the dataset's evaluator (emoji: the classifier's accuracy on
the prompt's Unicode subgroup; shapes: the analytic checker), FD in the classifier's features
against the training split, each beside its real-image baselines (`evaluation/alignment.py`). Usage:

    python experiments/cfg_sweep.py [--checkpoint CKPT] [--n 200] [--seeds 3] [--guidance 0 1 2 3 4 6 8]
                                    [--sampler dpmpp_2m] [--steps 20]
"""

import argparse
from pathlib import Path

import numpy as np
import torch

from latentdiff.checkpoints import load_latent_diffusion
from latentdiff.checkpoints.models import bundled_model
from latentdiff.data import load_dataset, split_holdout
from latentdiff.evaluation.alignment import AlignmentReport, evaluate_alignment
from latentdiff.metrics.classifier import load_or_train_classifier
from latentdiff.metrics.features import state_digest
from latentdiff.evaluation.autoencoder import stored_data_config
# experiments/report.py (the script's folder)
from report import Provenance, shown_path, write_report

TITLE = "Classifier-free guidance: FD against alignment"


def render(results: dict) -> list[str]:
    """The report's body from its raw results."""
    return [(f"Model: `{results['model']}`; {results['sampler']}, {results['steps']} steps; s = 0 "
             "is the unconditional model, s = 1 the conditional one without guidance. Evaluator "
             f"`{results['evaluator']}`."), "",
            AlignmentReport.from_dict(results["report"]).table()]


def plot(plt, results: dict):
    """FD against alignment, one point per guidance scale (± sd over seeds), with the real-image
    baselines."""
    report = AlignmentReport.from_dict(results["report"])
    figure, axis = plt.subplots(figsize=(6, 4.5))
    alignment = [np.mean(r.alignment) for r in report.rows]
    fd = [np.mean(r.fd) for r in report.rows]
    axis.errorbar(alignment, fd, xerr=[np.std(r.alignment) for r in report.rows],
                  yerr=[np.std(r.fd) for r in report.rows], marker="o", label="samples")
    for row, a, f in zip(report.rows, alignment, fd):
        axis.annotate(f"s={row.guidance_scale:g}", (a, f),
                      textcoords="offset points", xytext=(5, 5))
    axis.scatter([report.real], [report.fd_baseline], marker="*", s=120, color="black",
                 label="real held-out images")
    axis.axvline(report.shuffled, color="grey", linestyle=":", label="chance (shuffled real)")
    axis.set_xlabel(report.metric.split(":")[-1].strip())
    axis.set_ylabel("FD (classifier features)")
    axis.legend()
    return figure


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, default=None, help="default: the bundled emoji model")
    p.add_argument("--n", type=int, default=200,
                   help="held-out conditions = samples per seed and scale")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--guidance", type=float, nargs="+", default=[0, 1, 2, 3, 4, 6, 8])
    p.add_argument("--sampler", default="dpmpp_2m")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--name", default="cfg-sweep", help="report folder under reports/")
    args = p.parse_args()
    provenance = Provenance()
    checkpoint = args.checkpoint or bundled_model()
    model = load_latent_diffusion(checkpoint)
    data_cfg = stored_data_config(checkpoint)
    classifier, _ = load_or_train_classifier(data_cfg,
                                             split=split_holdout(load_dataset(data_cfg), data_cfg.holdout,
                                                                 data_cfg.split_seed))
    report = evaluate_alignment(model, data_cfg, args.guidance, seeds=range(args.seeds), n=args.n,
                                sampler=args.sampler, steps=args.steps)
    print(report.table(), flush=True)
    results = {"model": shown_path(checkpoint), "sampler": args.sampler, "steps": args.steps,
               "evaluator": f"classifier-{state_digest(classifier)}", "report": report.to_dict()}
    print(write_report(args.name, TITLE, results, render, provenance, plot))


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
