"""Truncated diffusion (TDPM) on MNIST: FD against the number of reverse steps, the chain truncated at
t_trunc and started from a learned (GAN) or moment-matched Gaussian prior, against the full chain.

Model: the unconditional MNIST `ldm-digits` (64 channels, 1400 steps, ε, 3×8×8 latents; the
guidance family's, shared with experiments/spectral.py). Its denoiser serves every chain. Priors
(`latentdiff train-tdpm tdpm-digits`), at each --t-trunc: gan (the bundled config's generator and
discriminator, --prior-steps steps, training seeds 0 … --seeds − 1) and gaussian (no training; the
posterior draw of seed s). Sampling: DDIM (deterministic) at each of --steps steps over the chain's
timesteps (the full chain: 999 … 0; truncated: t_trunc … 0), n samples per seed; the full chain at
50 steps is the reference. FD in the digits evaluator's features against the training split, beside
the real-vs-real FD at the same n. Cost: network evaluations (steps) and the prior's one generator
pass in GFLOPs beside the denoiser's, and the priors' training-loop minutes.

    python experiments/tdpm.py          # → reports/tdpm-mnist
"""

import argparse
import time
from pathlib import Path

import numpy as np

from latentdiff.checkpoints import load_latent_diffusion
from latentdiff.checkpoints.io import read_metadata
from latentdiff.config import load_config
from latentdiff.config_systems import TruncatedDiffusionTrainConfig
from latentdiff.metrics.classifier import classify
from latentdiff.metrics.frechet import FeatureStats, frechet_distance
from latentdiff.network import network_cost
from latentdiff.pipelines import generate
from latentdiff.train import truncation as truncation_training
from latentdiff.train.truncation import train_tdpm
# experiments/ (the script's folder)
from few_step import run_minutes
from guidance_family import Scorer, train_first_stage, train_ldm
from report import Provenance, shown_path, write_report
from spectral import DATA

TITLE = "Truncated diffusion (TDPM) on MNIST: FD against reverse steps, learned and Gaussian priors"


def _encoded_once(encode):
    """`encode_posteriors` remembered within this process: every prior here encodes the same
    training images with the same autoencoder (identical results; minutes per prior saved)."""
    memo = {}

    def encoded(autoencoder, data, device, batch_size: int = 256):
        key = (len(data), tuple(float(p.double().sum()) for p in autoencoder.parameters()))
        if key not in memo:
            memo[key] = encode(autoencoder, data, device, batch_size)
        return memo[key]
    return encoded


def prior(args, model: Path, kind: str, t_trunc: int, seed: int) -> Path:
    """The truncated model of this prior (trained unless its run has finished)."""
    cfg = load_config(TruncatedDiffusionTrainConfig, "tdpm-digits", [
        f"model={model}", f"prior={kind}", f"t_trunc={t_trunc}", f"train.seed={seed}",
        f"train.max_steps={args.prior_steps}", f"train.checkpoint_every={args.prior_steps}",
        f"train.sample_every={args.prior_steps}",
        f"train.out_dir={args.root / 'tdpm' / f'{kind}-t{t_trunc}-s{seed}'}"])
    last = Path(cfg.train.out_dir) / "checkpoints" / "last.safetensors"
    done = kind == "gaussian" or (
        last.is_file() and read_metadata(last)["train_state"]["step"] == args.prior_steps)
    return last if last.is_file() and done else train_tdpm(cfg, resume=True)


def fd_curve(model, score: Scorer, seed: int, steps: list[int]) -> list[dict]:
    points = []
    for k in steps:
        start = time.perf_counter()
        images = generate(model, seeds=[seed * score.n + i for i in range(score.n)],
                          sampler="ddim", steps=k)
        seconds = time.perf_counter() - start
        features = classify(score.evaluator, images)[1]
        points.append({"steps": k, "fd": frechet_distance(FeatureStats.of(features), score.reference),
                       "sampling_s": seconds})
    return points


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--n", type=int, default=400)
    p.add_argument("--t-trunc", type=int, nargs="+", default=[99, 299])
    p.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--prior-steps", type=int, default=1500, help="GAN prior training steps")
    p.add_argument("--root", type=Path, default=Path("runs/guidance-family/mnist"))
    p.add_argument("--train-only", action="store_true", help="train the priors; no scores, no report")
    p.add_argument("--report", default="tdpm-mnist")
    args = p.parse_args()
    provenance = Provenance()
    truncation_training.encode_posteriors = _encoded_once(truncation_training.encode_posteriors)
    ae = train_first_stage(args.root, DATA)
    base = train_ldm(args.root, ae, "unconditional", DATA, "unet.num_classes=null")
    runs = {(kind, t, seed): prior(args, base, kind, t, seed)
            for t in args.t_trunc for kind in ("gan", "gaussian") for seed in range(args.seeds)}
    if args.train_only:
        return
    score = Scorer(args.n, DATA)
    base_model = load_latent_diffusion(base)
    unet_gflops = base_model.network_cost().gflops
    rows = [{"model": "full chain", "t_trunc": 999, "prior": None, "runs": [shown_path(base)],
             "sigma": float(base_model.schedule.sigmas[-1]),
             "points": [fd_curve(base_model, score, seed, sorted({*args.steps, 50}))
                        for seed in range(args.seeds)]}]
    print(rows[-1]["model"], [[round(q["fd"], 2) for q in c] for c in rows[-1]["points"]], flush=True)
    for t in args.t_trunc:
        for kind in ("gan", "gaussian"):
            row = {"model": f"{kind} prior, t_trunc {t}", "t_trunc": t, "prior": kind, "runs": [],
                   "points": [], "prior_minutes": []}
            for seed in range(args.seeds):
                model = load_latent_diffusion(runs[kind, t, seed])
                row["runs"].append(shown_path(runs[kind, t, seed]))
                row["sigma"] = model.prior.sigma
                row["points"].append(fd_curve(model, score, seed, args.steps))
                row["prior_minutes"].append(run_minutes(runs[kind, t, seed].parent.parent) or 0.0)
                if kind == "gan":
                    row["prior_gflops"] = network_cost(_Unconditioned(model.prior.network),
                                                       model.latent_shape).gflops
            rows.append(row)
            print(row["model"], [[round(q["fd"], 2) for q in c] for c in row["points"]], flush=True)
    results = {"seeds": args.seeds, "n": args.n, "baseline": score.baseline, "unet_gflops": unet_gflops,
               "prior_steps": args.prior_steps, "steps": args.steps, "model": shown_path(base),
               "rows": rows}
    print(write_report(args.report, TITLE, results, render, provenance, plot=plot))


class _Unconditioned:
    """A prior network under `network_cost`'s call (x, c_noise): the noise level is not an input."""

    def __init__(self, network):
        self.network = network

    def parameters(self):
        return self.network.parameters()

    def __call__(self, x, c_noise):
        return self.network(x)


def fd_by_steps(points) -> dict[int, list[float]]:
    """steps → the FD of every seed, from points {"steps": k, "fd": …, …}."""
    out: dict[int, list[float]] = {}
    for q in points:
        out.setdefault(q["steps"], []).append(q["fd"])
    return out


def _curve(row: dict) -> dict[int, list[float]]:
    return fd_by_steps(q for points in row["points"] for q in points)


def errorbar_curve(ax, curve: dict[int, list[float]], label: str) -> None:
    """Mean FD against steps, the seeds' sd as error bars."""
    ks = sorted(curve)
    ax.errorbar(ks, [np.mean(curve[k]) for k in ks], yerr=[np.std(curve[k]) for k in ks],
                marker="o", capsize=3, label=label)


def render(results: dict) -> list[str]:
    steps = results["steps"]
    lines = [f"MNIST, the unconditional LDM-4 (3×8×8 latents, ε, 1000 timesteps); DDIM; "
             f"{results['seeds']} seeds (GAN priors: training seeds; the others: sampling seeds), "
             f"n = {results['n']} samples each. FD in the evaluator's features against the training "
             f"split (real-vs-real at the same n: {results['baseline']['fd']:.3f}). GAN priors: "
             f"{results['prior_steps']} training steps. One denoiser evaluation costs "
             f"{results['unet_gflops']:.4f} GFLOPs.", "",
             "| chain | σ at its start | " + " | ".join(f"{k} steps" for k in steps) +
             " | 50 steps | prior GFLOPs | prior training min |",
             "|---|---|" + "---|" * (len(steps) + 3)]
    for r in results["rows"]:
        curve = _curve(r)
        cells = [f"{np.mean(curve[k]):.2f} ± {np.std(curve[k]):.2f}" if k in curve else "—"
                 for k in [*steps, 50]]
        sigma = f"{r['sigma']:.3f}"
        gflops = f"{r['prior_gflops']:.4f}" if "prior_gflops" in r else "—"
        minutes = (f"{np.mean(r['prior_minutes']):.1f}" if r.get("prior") == "gan" else "—")
        lines.append(f"| {r['model']} | {sigma} | " + " | ".join(cells) + f" | {gflops} | {minutes} |")
    return lines


def plot(plt, results: dict):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results["rows"]:
        errorbar_curve(ax, _curve(r), r["model"])
    ax.axhline(results["baseline"]["fd"], color="black", linestyle=":", label="real vs real")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("DDIM steps (network evaluations)")
    ax.set_ylabel("FD")
    ax.legend(fontsize=8)
    ax.set_title(TITLE, fontsize=9)
    return fig


if __name__ == "__main__":
    main()
