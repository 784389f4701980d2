"""Paper Fig. 7 at small scale: sample quality (FD) against sampler steps and samples per second.

For each sampler and step count, n samples per seed from a text model (the held-out captions cycled,
guidance s) or an unconditional/class model; FD in the classifier evaluator's features against the
training split, beside the held-out-vs-training baseline at the same n. Usage:

    python experiments/ddim_steps.py [--checkpoint CKPT] [--n 400] [--seeds 3] [--steps 5 10 20 50 100]
                                     [--samplers ddim dpmpp_2m] [--guidance 3]
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from latentdiff.metrics.frechet import FeatureStats, frechet_distance
from latentdiff.evaluation.sample_quality import draw_samples
# experiments/report.py (the script's folder)
from report import FDSetup, Provenance, shown_path, write_report

TITLE = "FD against sampler steps and throughput"


def render(results: dict) -> list[str]:
    """The report's body from its raw results."""
    rows = results["rows"]
    return [(f"Model: `{results['model']}`; {results['n']} samples per seed × {results['seeds']} "
             f"seeds, guidance {results['guidance']:g}; FD in the {results['features']} features "
             f"(`{results['evaluator']}`) against the training split "
             f"({results['reference_size']} images)."),
            f"Real-vs-real baseline (held-out vs training, n = {results['baseline_n']}): FD "
            f"{results['baseline']:.2f}.",
            "Samples per second are wall-clock on the machine above (median over seeds).", "",
            "| sampler | steps | FD (mean ± sd over seeds) | samples/s (median) |",
            "|---|---|---|---|",
            *(f"| {r['sampler']} | {r['steps']} | {np.mean(r['fd']):.2f} ± {np.std(r['fd']):.2f} | "
              f"{np.median(r['samples_per_s']):.1f} |" for r in rows)]


def plot(plt, results: dict):
    """FD against steps (± sd over seeds) and against samples per second, per sampler, with the
    real-vs-real FD."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for sampler in dict.fromkeys(r["sampler"] for r in results["rows"]):
        mine = [r for r in results["rows"] if r["sampler"] == sampler]
        fd = [np.mean(r["fd"]) for r in mine]
        left.errorbar([r["steps"] for r in mine], fd, [np.std(r["fd"]) for r in mine],
                      marker="o", label=sampler)
        right.plot([np.median(r["samples_per_s"]) for r in mine], fd, marker="o", label=sampler)
    for axis in (left, right):
        axis.axhline(results["baseline"], color="grey", linestyle="--", label="real vs real")
        axis.set_ylabel("FD")
        axis.legend()
    left.set_xscale("log")
    left.set_xlabel("sampler steps")
    right.set_xscale("log")
    right.set_xlabel("samples per second (this machine)")
    return figure


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, default=None, help="default: the bundled emoji model")
    p.add_argument("--n", type=int, default=400)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, nargs="+", default=[5, 10, 20, 50, 100])
    p.add_argument("--samplers", nargs="+", default=["ddim", "dpmpp_2m"])
    p.add_argument("--guidance", type=float, default=3.0)
    args = p.parse_args()
    provenance = Provenance()
    setup = FDSetup.of(args.checkpoint, args.n, args.guidance)
    rows = []
    for sampler in args.samplers:
        for steps in args.steps:
            fds, rates = [], []
            for seed in range(args.seeds):
                start = time.perf_counter()
                images = draw_samples(setup.model, args.n, seed, setup.conditions,
                                      setup.guidance, sampler=sampler,
                                      steps=steps)
                rates.append(args.n / (time.perf_counter() - start))
                fds.append(frechet_distance(FeatureStats.of(setup.extractor(images)[0]),
                                            setup.reference))
            rows.append({"sampler": sampler, "steps": steps, "fd": fds, "samples_per_s": rates})
            print(f"{sampler} {steps:4d} steps: FD {np.mean(fds):.2f} ± {np.std(fds):.2f}, "
                  f"{np.median(rates):.1f} samples/s", flush=True)
    results = {"model": shown_path(setup.checkpoint), "n": args.n, "seeds": args.seeds,
               "guidance": setup.guidance,
               "features": setup.extractor.name, "evaluator": setup.extractor.identity,
               "reference_size": setup.reference_size, "baseline_n": setup.baseline_n,
               "baseline": setup.baseline,
               "rows": rows}
    print(write_report("ddim-steps", TITLE, results, render, provenance, plot))


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
