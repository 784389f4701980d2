"""Sampler accuracy on a trained model: the error of each solver's final latents against a converged
solution of the same probability-flow ODE from the same x_T, as a function of network evaluations
(NFE), with FD beside it.

The solver papers (DPM-Solver, UniPC, EDM) rank samplers by this error, because it measures what a
sampler does: solve the model's ODE. FD in a small classifier's features mixes that with the model's
own error and is not monotone in NFE on the bundled model (reports/ddim-steps), so it cannot rank
solvers. Here every sampler starts from the same x_T (per-sample seeds), with the same guided
denoiser (the bundled emoji model at guidance s, held-out captions) and the same σ grid family
(`--spacing`, default uniform timesteps 999 … 0, then σ = 0). The error is measured on the first
`--n-error` samples of each seed: against Heun at `--reference-steps` steps (2·steps − 1 NFE), whose
own error a second solution (DPM-Solver++(3M) at `--check-steps` steps) bounds; RMS over the
latent's elements of z − z_ref, per sample, mean over samples and seeds. FD uses all `--n` samples
of each seed.

    python experiments/sampler_accuracy.py [--checkpoint CKPT] [--n 200] [--n-error 32] [--seeds 2]
                                           [--nfe 5 10 20 50 100] [--guidance 3] [--reference-steps 250]
                                           [--check-steps 500]
"""

import argparse
from pathlib import Path

import numpy as np
import torch

from latentdiff.data import to_uint8
from latentdiff.metrics.frechet import FeatureStats, frechet_distance
from latentdiff.pipelines import generate
from latentdiff.samplers import SAMPLERS
# experiments/report.py (the script's folder)
from report import FDSetup, Provenance, shown_path, write_report

TITLE = "Sampler accuracy: error against a converged ODE solution, and FD, over network evaluations"
SAMPLERS_COMPARED = ("ddim", "plms", "heun", "lms", "dpmpp_2m", "dpmpp_3m", "dpmpp_2s", "unipc")


def steps_for(name: str, nfe: int) -> int:
    """Steps that spend `nfe` network evaluations (or the nearest below): 2·steps − 1 for
    two-evaluation methods, steps + 1 for PLMS (its first step evaluates twice)."""
    per_step = SAMPLERS[name].nfe_per_step
    if per_step.startswith("2"):
        return max(1, (nfe + 1) // 2)
    return max(1, nfe - 1) if name == "plms" else nfe


def nfe_of(name: str, steps: int) -> int:
    per_step = SAMPLERS[name].nfe_per_step
    if per_step.startswith("2"):
        return 2 * steps - 1
    return steps + 1 if name == "plms" else steps


def latents(model, seeds: list[int], conditions: dict, guidance: float, sampler: str, steps: int,
            spacing: str) -> torch.Tensor:
    """The final latents (n, c, h, w) of the samples of these seeds (conditions: one per sample, or
    more)."""
    return generate(model, seeds, guidance_scale=guidance, sampler=sampler,
                    steps=steps, spacing=spacing,
                    decode=False, **{key: value[:len(seeds)] for key, value in conditions.items()})


def rms(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """RMS over each sample's elements of a − b: (n,)."""
    return (a - b).flatten(1).pow(2).mean(1).sqrt().double().numpy()


def table(results: dict, cell) -> list[str]:
    """A markdown table: one row per sampler, one column per NFE budget, `cell(row)` in each
    ("–": not run)."""
    rows = results["rows"]
    header = "| sampler | " + " | ".join(f"NFE {n}" for n in results["nfe"]) + " |"
    return [header, "|---|" + "---|" * len(results["nfe"]),
            *(f"| {name} | " + " | ".join("–" if f"{name}|{n}" not in rows
                                          else cell(rows[f"{name}|{n}"])
                                          for n in results["nfe"]) + " |"
              for name in results["samplers"])]


def render(results: dict) -> list[str]:
    """The report's body from its raw results."""
    floor = results["reference_error"]
    lines = [(f"Model: `{results['model']}`, guidance {results['guidance']:g}, held-out captions; "
              f"{results['n']} samples per seed × {results['seeds']} seeds; σ grid: "
              f"{results['spacing']} timesteps. Reference, for the first {results['n_error']} "
              f"samples of each seed: heun, {results['reference_steps']} steps "
              f"({2 * results['reference_steps'] - 1} NFE); it differs from dpmpp_3m at "
              f"{results['check_steps']} steps by RMS {np.mean(floor):.2e} ± {np.std(floor):.2e} "
              "(so the reference's own error is at most about that). The reference latents have "
              f"RMS {results['latent_rms']:.3f}."), "",
             f"Latent error (RMS of z − z_ref per sample; mean over {results['n_error']} samples × "
             f"{results['seeds']} seeds):", "",
             *table(results, lambda row: f"{np.mean(row['error']):.4f}"),
             "",
             (f"FD in the {results['features']} features (`{results['evaluator']}`) against the "
              f"training split, mean ± sd over seeds (n = {results['n']} per seed; real-vs-real "
              f"baseline at that n: {results['baseline']:.2f}):"), "",
             *table(results, lambda row: f"{np.mean(row['fd']):.2f} ± {np.std(row['fd']):.2f}")]
    lines += ["",
              ("NFE counts network evaluations per sample (a guided step evaluates the "
               "conditional and the unconditional model in one batch: one NFE). \"–\": the sampler "
               "cannot spend that budget (a two-evaluation method at NFE 5 runs 3 steps = 5 NFE, "
               "shown under 5).")]
    return lines


def plot(plt, results: dict):
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name in results["samplers"]:
        points = [(row["nfe"], np.mean(row["error"]), np.mean(row["fd"]))
                  for row in (results["rows"].get(f"{name}|{n}") for n in results["nfe"]) if row]
        left.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
        right.plot([p[0] for p in points], [p[2] for p in points], marker="o", label=name)
    left.axhline(np.mean(results["reference_error"]), color="grey", linestyle=":",
                 label="reference's own error")
    right.axhline(results["baseline"], color="grey", linestyle="--", label="real vs real")
    left.set_ylabel("RMS latent error vs reference")
    right.set_ylabel("FD (classifier features)")
    for axis in (left, right):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("network evaluations per sample")
        axis.legend(fontsize=7)
    return figure


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, default=None, help="default: the bundled emoji model")
    p.add_argument("--n", type=int, default=200, help="samples per seed (FD)")
    p.add_argument("--n-error", type=int, default=32,
                   help="of which the first this many get the error")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20, 50, 100])
    p.add_argument("--samplers", nargs="+", default=list(SAMPLERS_COMPARED))
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--spacing", default="uniform")
    p.add_argument("--reference-steps", type=int, default=250)
    p.add_argument("--check-steps", type=int, default=500)
    args = p.parse_args()
    provenance = Provenance()
    setup = FDSetup.of(args.checkpoint, args.n, args.guidance)
    model, extractor = setup.model, setup.extractor

    def fd(z: torch.Tensor) -> float:
        images = to_uint8(model.codec.decode(z))
        return frechet_distance(FeatureStats.of(extractor(images)[0]), setup.reference)

    def run(seed: int, count: int, sampler: str, steps: int) -> torch.Tensor:
        seeds = list(range(seed * args.n, seed * args.n + count))
        return latents(model, seeds, setup.conditions, setup.guidance, sampler, steps, args.spacing)

    references, reference_error = [], []
    for seed in range(args.seeds):
        z_ref = run(seed, args.n_error, "heun", args.reference_steps)
        check = run(seed, args.n_error, "dpmpp_3m", args.check_steps)
        references.append(z_ref)
        reference_error += rms(check, z_ref).tolist()
        print(f"seed {seed}: reference vs dpmpp_3m RMS {np.mean(rms(check, z_ref)):.2e}",
              flush=True)
    rows = {}
    for name in args.samplers:
        for nfe in args.nfe:
            steps = steps_for(name, nfe)
            if nfe_of(name, steps) > nfe or f"{name}|{nfe}" in rows:
                continue
            errors, fds = [], []
            for seed in range(args.seeds):
                z = run(seed, args.n, name, steps)
                errors += rms(z[:args.n_error], references[seed]).tolist()
                fds.append(fd(z))
            rows[f"{name}|{nfe}"] = {"steps": steps, "nfe": nfe_of(name, steps),
                                     "error": errors, "fd": fds}
            print(f"{name:9s} NFE {nfe:4d}: error {np.mean(errors):.4f}, FD {np.mean(fds):.2f}",
                  flush=True)
    results = {"model": shown_path(setup.checkpoint), "n": args.n,
               "n_error": args.n_error, "seeds": args.seeds,
               "guidance": setup.guidance, "spacing": args.spacing, "nfe": args.nfe,
               "samplers": args.samplers,
               "reference_steps": args.reference_steps, "check_steps": args.check_steps,
               "reference_error": reference_error,
               "latent_rms": float(torch.cat(references).pow(2).mean().sqrt()),
               "features": extractor.name, "evaluator": extractor.identity,
               "baseline": setup.baseline, "rows": rows}
    print(write_report("sampler-accuracy", TITLE, results, render, provenance, plot))


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
