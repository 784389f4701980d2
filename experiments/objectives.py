"""Training objectives side by side on MNIST LDM-4 at the ldm-tradeoff budget: the paper's
ε-prediction with uniform t against min-SNR-γ, v-prediction, EDM, EDM2's learned weighting and
rectified flow, each over several training seeds, then post-hoc EMA lengths.

Every recipe trains the ldm-tradeoff's LDM-4 (its f = 4 autoencoder and 1.16 M-parameter UNet,
batch 64, AdamW 1e-3 with 100 warm-up steps, classic EMA 0.999) for --steps steps, keeping a
checkpoint every --steps/10 steps and post-hoc EMA snapshots every --steps/20. Each kept checkpoint
is scored by the FD of --n unconditional DDIM samples (each model's own σ table, uniform timestep
spacing) in the MNIST classifier's features against the training split, sampling seed 0. The
report asks: how many times fewer steps (= less training time: a step costs the same in every
recipe) does each recipe need to reach the final FD of today's recipe, and how much lower is its FD
at the same step? Then, on today's recipe and the best one, which
post-hoc EMA length (σ_rel) is best, against the classic EMA.

    python experiments/objectives.py [--data ../shared/data/mnist] [--steps 2000] [--seeds 0 1 2]
                                     [--recipes ...] [--n 500] [--sample-steps 20]
                                     [--runs runs/objectives]

Skips (exit 0) when the MNIST folder is absent. Finished runs and scores are reused when run again.
"""

import argparse
from pathlib import Path

import numpy as np
import torch

from latentdiff.config import (DataConfig, DiffusionConfig, LatentDiffusionTrainConfig,
                               NoiseScheduleConfig, ObjectiveConfig, PostHocEMAConfig,
                               PreviewConfig, TrainConfig, to_dict)
from latentdiff.train.autoencoder import train_autoencoder
from latentdiff.train.diffusion import train_latent_diffusion
from latentdiff.train.posthoc_ema import write_posthoc_checkpoint
# experiments/ (the script's folder is on sys.path)
from ldm_tradeoff import (Scorer, autoencoder_config, finished, log_times, mnist_fd_setup,
                          unet_config)
from report import Provenance, write_report

TITLE = "Training objectives and loss weightings at equal compute (MNIST LDM-4)"
F = 4
BETAS = NoiseScheduleConfig(kind="scaled_linear", beta_start=0.0015, beta_end=0.0195)
# name → (what it is, diffusion config, objective config)
RECIPES = {
    "eps": ("ε, uniform t (the paper's; today)", DiffusionConfig(BETAS, "eps"), ObjectiveConfig()),
    "eps-minsnr5": ("ε, min-SNR-5", DiffusionConfig(BETAS, "eps"),
                    ObjectiveConfig(weighting="min_snr", gamma=5.0)),
    "v-minsnr5": ("v, min-SNR-5", DiffusionConfig(BETAS, "v"),
                  ObjectiveConfig(weighting="min_snr", gamma=5.0)),
    "edm": ("EDM: preconditioning, lognormal σ, λ_EDM",
            DiffusionConfig(NoiseScheduleConfig(kind="karras"), "edm"),
            ObjectiveConfig(sigma_sampler="lognormal", weighting="edm")),
    "edm2": ("EDM + learned weighting u(σ) (EDM2)",
             DiffusionConfig(NoiseScheduleConfig(kind="karras"), "edm"),
             ObjectiveConfig(sigma_sampler="lognormal", weighting="edm", learned_weighting=True)),
    "flow": ("rectified flow, logit-normal t",
             DiffusionConfig(NoiseScheduleConfig(kind="flow"), "flow"),
             ObjectiveConfig(sigma_sampler="logit_normal")),
}
TODAY = "eps"
SIGMA_RELS = (0.02, 0.04, 0.07, 0.1, 0.15, 0.2, 0.25)
KEPT = 10


def run_config(recipe: str, seed: int, autoencoder: str, data: DataConfig, out: Path,
               steps: int) -> LatentDiffusionTrainConfig:
    _, diffusion, objective = RECIPES[recipe]
    every = steps // KEPT
    return LatentDiffusionTrainConfig(
        autoencoder=autoencoder, unet=unet_config(F), diffusion=diffusion, objective=objective,
        data=data, ema_decay=0.999, posthoc_ema=PostHocEMAConfig(snapshot_every=steps // 20),
        train=TrainConfig(out_dir=str(out), max_steps=steps, batch_size=64, lr=1e-3, seed=seed,
                          warmup_steps=100, log_every=every, sample_every=0,
                          checkpoint_every=every, keep_checkpoints=True),
        preview=PreviewConfig(sampler="ddim", steps=50, per_class=8))


def train_all(args, data: DataConfig) -> dict[tuple[str, int], Path]:
    ae_run = args.runs / f"ae-f{F}"
    checkpoint = ae_run / "checkpoints" / "last.safetensors"
    if not finished(ae_run):
        print("training the f=4 autoencoder", flush=True)
        train_autoencoder(autoencoder_config(F, data, ae_run, args.ae_steps),
                          resume=checkpoint.exists())
    runs = {}
    for recipe in args.recipes:
        for seed in args.seeds:
            run = args.runs / f"{recipe}-seed{seed}"
            if not finished(run):  # a step budget: an interrupted run resumes exactly
                print(f"training {recipe}, seed {seed}", flush=True)
                cfg = run_config(recipe, seed, str(checkpoint), data, run, args.steps)
                train_latent_diffusion(cfg, resume=(run / "checkpoints" / "last.safetensors").exists())
            runs[recipe, seed] = run
    return runs


def posthoc_checkpoint(run: Path, sigma_rel: float) -> Path:
    out = run / "checkpoints" / f"posthoc-{sigma_rel:g}.safetensors"
    if not out.exists():
        write_posthoc_checkpoint(run / "checkpoints" / "last.safetensors", sigma_rel, out)
    return out


def steps_to_reach(curve: list[tuple[float, float]], steps: int, target: float) -> float | None:
    """The training step at which an FD curve (kept checkpoints at steps/KEPT, 2·steps/KEPT, …)
    first reaches `target`, linearly interpolated between kept checkpoints (None: never)."""
    every = steps // len(curve)
    points = [(every * (i + 1), fd) for i, (_, fd) in enumerate(curve)]
    for (s0, f0), (s1, f1) in zip([(0, float("inf"))] + points[:-1], points):
        if f1 <= target:
            return s1 if not np.isfinite(f0) else s0 + (s1 - s0) * (f0 - target) / (f0 - f1)
    return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path,
                   default=Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist")
    p.add_argument("--steps", type=int, default=2000, help="training steps of every run")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    p.add_argument("--ae-steps", type=int, default=400)
    p.add_argument("--n", type=int, default=500, help="samples per FD")
    p.add_argument("--sample-steps", type=int, default=20, help="DDIM steps")
    p.add_argument("--runs", type=Path, default=Path("runs/objectives"))
    args = p.parse_args()
    if not args.data.is_dir():
        print(f"skipped: no MNIST folder at {args.data} (give --data)")
        return
    provenance = Provenance()
    data, train, _, accuracy, extractor, reference, baseline = mnist_fd_setup(args.data, args.n)
    runs = train_all(args, data)
    torch.set_grad_enabled(False)
    score = Scorer(argparse.Namespace(runs=args.runs, n=args.n, steps=args.sample_steps),
                   extractor, reference)
    recipes = {}
    for recipe in args.recipes:
        seeds = {}
        for seed in args.seeds:
            run = runs[recipe, seed]
            times = log_times(run)
            # the regular checkpoints (a run stopped by a signal also keeps the step it stopped at)
            kept = [c for c in sorted((run / "checkpoints").glob("step-*.safetensors"))
                    if int(c.stem[5:]) % (args.steps // KEPT) == 0]
            seeds[str(seed)] = {"curve": [(times[int(c.stem[5:])], score(c, 0)["fd"]) for c in kept],
                                "steps": int(kept[-1].stem[5:])}
        recipes[recipe] = {"what": RECIPES[recipe][0], "seeds": seeds}
    best = min(recipes, key=lambda r: np.mean([s["curve"][-1][1]
                                               for s in recipes[r]["seeds"].values()]))
    posthoc = {}
    for recipe in dict.fromkeys([TODAY, best]):
        posthoc[recipe] = {f"{s:g}": [score(posthoc_checkpoint(runs[recipe, seed], s), 0)["fd"]
                                      for seed in args.seeds] for s in SIGMA_RELS}
    results = {"steps": args.steps, "n": args.n, "sample_steps": args.sample_steps,
               "seeds": args.seeds, "n_train": len(train), "evaluator": extractor.identity,
               "evaluator_accuracy": accuracy, "baseline": baseline, "today": TODAY,
               "best": best, "recipes": recipes, "posthoc": posthoc,
               "configs": {r: {"diffusion": to_dict(RECIPES[r][1]), "objective": to_dict(RECIPES[r][2])}
                           for r in args.recipes}}
    print(write_report("objectives", TITLE, results, render, provenance, plot))


def seconds_per_step(curve: list[tuple[float, float]], steps: int) -> float:
    """Median training seconds per step between consecutive kept checkpoints (a resumed run's clock
    restarts: intervals across a restart are left out)."""
    every, times = steps // len(curve), [t for t, _ in curve]
    return float(np.median([(b - a) / every for a, b in zip(times, times[1:]) if b > a]))


def summary(results: dict) -> dict[str, dict]:
    """Per recipe: final FDs over seeds, mean s/step, the step at which each seed reaches today's
    mean final FD, and the speed-up: today's steps over those steps. Counted in steps, as every
    recipe costs the same per step (s/step in the table) and step counts do not depend on what
    else the machine ran meanwhile."""
    today = results["recipes"][results["today"]]["seeds"]
    target = float(np.mean([s["curve"][-1][1] for s in today.values()]))
    out = {}
    for recipe, r in results["recipes"].items():
        finals = [s["curve"][-1][1] for s in r["seeds"].values()]
        reach = [steps_to_reach(s["curve"], s["steps"], target) for s in r["seeds"].values()]
        per_step = [seconds_per_step(s["curve"], s["steps"]) for s in r["seeds"].values()]
        out[recipe] = {"finals": finals, "reach": reach, "s_per_step": float(np.mean(per_step)),
                       "speedup": [None if n is None else results["steps"] / n for n in reach]}
    return {"target": target, "recipes": out}


def render(results: dict) -> list[str]:
    s = summary(results)
    today = s["recipes"][results["today"]]
    lines = [(f"MNIST at 32×32 ({results['n_train']} training images; 5000 held out), the "
              f"ldm-tradeoff's LDM-4 (f = 4 KL autoencoder, 1.16 M-parameter UNet, batch 64, AdamW "
              f"1e-3, 100 warm-up steps, EMA 0.999), unconditional, {results['steps']} training "
              f"steps per run, training seeds {', '.join(map(str, results['seeds']))}. FD: "
              f"{results['n']} DDIM-{results['sample_steps']} samples (sampling seed 0; each "
              "model's own σ table, uniform timestep spacing) against the training split in the "
              f"features of the MNIST classifier evaluator `{results['evaluator']}` (held-out "
              f"accuracy {results['evaluator_accuracy']:.4f}), at every kept checkpoint "
              f"({len(next(iter(results['recipes'].values()))['seeds']['0']['curve'])} per run)."),
             f"Real-vs-real baseline (held-out vs training, n = {results['n']}): FD "
             f"{results['baseline']:.2f}. Target: today's mean final FD {s['target']:.2f} (at step "
             f"{results['steps']}).", "",
             "| recipe | final FD (mean ± sd over seeds) | vs today | s/step | reaches today's "
             "final FD at step (per seed) | speed-up (mean) |",
             "|---|---|---|---|---|---|"]
    for recipe, r in s["recipes"].items():
        change = (np.mean(r["finals"]) / np.mean(today["finals"]) - 1) * 100
        first = results["steps"] // KEPT  # reached there: at most that many steps
        reach = ", ".join("never" if n is None else f"{'≤ ' * (n <= first)}{n:.0f}"
                          for n in r["reach"])
        speed = [v for v in r["speedup"] if v is not None]
        bound = "≥ " if any(n is not None and n <= first for n in r["reach"]) else ""
        speed_text = (f"{bound}{np.mean(speed):.2f}×" if len(speed) == len(r["speedup"])
                      else f"{len(speed)}/{len(r['speedup'])} seeds reach it")
        lines.append(f"| {results['recipes'][recipe]['what']} (`{recipe}`) | "
                     f"{np.mean(r['finals']):.2f} ± {np.std(r['finals']):.2f} | {change:+.0f} % | "
                     f"{r['s_per_step']:.3f} | {reach} | {speed_text} |")
    lines += ["", ("Speed-up: today's steps over the steps the recipe needs to reach today's mean "
                   "final FD (linear interpolation between kept checkpoints), per seed, averaged; "
                   "in training time the same, as a step costs the same in every recipe (s/step, "
                   "measured in the runs, moves with whatever else ran on this shared machine). "
                   "\"≤\": reached at the first kept checkpoint already, so the speed-up is a lower "
                   "bound. "
                   "\"vs today\": change of the mean final FD at the same number of steps."), "",
              "Post-hoc EMA at the last step (FD, mean ± sd over seeds; classic EMA 0.999 for "
              "comparison):", "",
              "| recipe | classic EMA 0.999 | " + " | ".join(
                  f"σ_rel {v}" for v in next(iter(results["posthoc"].values()))) + " |",
              "|---|---|" + "---|" * len(next(iter(results["posthoc"].values())))]
    for recipe, sweep in results["posthoc"].items():
        classic = s["recipes"][recipe]["finals"]
        lines.append(f"| `{recipe}` | {np.mean(classic):.2f} ± {np.std(classic):.2f} | " + " | ".join(
            f"{np.mean(v):.2f} ± {np.std(v):.2f}" for v in sweep.values()) + " |")
    return lines


def plot(plt, results: dict):
    """FD over training steps per recipe (mean ± sd over seeds at each kept checkpoint), and the
    post-hoc EMA sweep."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for recipe, r in results["recipes"].items():
        fds = np.array([[fd for _, fd in s["curve"]] for s in r["seeds"].values()])  # (seeds, kept)
        steps = results["steps"] // fds.shape[1] * np.arange(1, fds.shape[1] + 1)
        left.errorbar(steps, fds.mean(0), fds.std(0), marker="o", markersize=3, capsize=2,
                      label=recipe)
    for recipe, sweep in results["posthoc"].items():
        x = [float(v) for v in sweep]
        right.errorbar(x, [np.mean(v) for v in sweep.values()], [np.std(v) for v in sweep.values()],
                       marker="o", capsize=2, label=recipe)
    for axis in (left, right):
        axis.axhline(results["baseline"], color="grey", linestyle="--", label="real vs real")
        axis.set_yscale("log")
        axis.set_ylabel("FD (classifier features)")
        axis.legend(fontsize=8)
    left.set_xlabel("training steps (batch 64)")
    right.set_xlabel("post-hoc EMA σ_rel at the last step")
    return figure


if __name__ == "__main__":
    main()
