"""Training objectives side by side on MNIST LDM-4 at the ldm-tradeoff budget: the paper's
ε-prediction with uniform t against min-SNR-γ, v-prediction, EDM, EDM2's learned weighting and
rectified flow, each over several training seeds, then post-hoc EMA lengths.

Every recipe trains the ldm-tradeoff's LDM-4 (its f = 4 autoencoder and 1.16 M-parameter UNet,
batch 64, AdamW 1e-3 with 100 warm-up steps, classic EMA 0.999) for --steps steps, keeping a
checkpoint every --steps/10 steps and post-hoc EMA snapshots every --steps/20. The checkpoints at
10, 20, 30, 50, 70 and 100 % of the run (denser early, where the fast recipes cross) are scored,
right after each run, by the FD of --n unconditional DDIM samples (each model's own σ table, uniform timestep
spacing) in the MNIST classifier's features against the training split, sampling seed 0. The
report asks: how many times fewer steps (= less training time: a step costs the same in every
recipe) does each recipe need to reach the final FD of today's recipe, and how much lower is its FD
at the same step? Then, on the best recipe, which post-hoc EMA length (σ_rel) is best, against the
classic EMA.

    python experiments/objectives.py [--data ../shared/data/mnist] [--steps 2000] [--seeds 0 1 2]
                                     [--recipes ...] [--n 500] [--sample-steps 20]
                                     [--runs runs/objectives] [--no-report]

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
KEPT = 10  # checkpoints kept per run, every steps/KEPT
SCORED = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0)  # … of which these fractions of the run are scored


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


def train_autoencoder_once(args, data: DataConfig) -> Path:
    ae_run = args.runs / f"ae-f{F}"
    checkpoint = ae_run / "checkpoints" / "last.safetensors"
    if not finished(ae_run):
        print("training the f=4 autoencoder", flush=True)
        train_autoencoder(autoencoder_config(F, data, ae_run, args.ae_steps),
                          resume=checkpoint.exists())
    return checkpoint


def train_and_score(args, recipe: str, seed: int, autoencoder: Path, data: DataConfig,
                    score) -> tuple[Path, dict]:
    """Train one run (a step budget: an interrupted run resumes exactly) and score its checkpoints
    at `scored_steps`: (run folder, {"curve": [(seconds, FD, step), …]})."""
    run = args.runs / f"{recipe}-seed{seed}"
    if not finished(run):
        print(f"training {recipe}, seed {seed}", flush=True)
        cfg = run_config(recipe, seed, str(autoencoder), data, run, args.steps)
        train_latent_diffusion(cfg, resume=(run / "checkpoints" / "last.safetensors").exists())
    times = log_times(run)
    wanted = set(scored_steps(args.steps))
    # the scored regular checkpoints (a run stopped by a signal also keeps the step it stopped at)
    kept = sorted(step for step in (int(c.stem[5:]) for c in (run / "checkpoints").glob("step-*"))
                  if step in wanted)
    with torch.no_grad():
        curve = [(times[step], score(run / "checkpoints" / f"step-{step:07d}.safetensors", 0)["fd"],
                  step) for step in kept]
    return run, {"curve": curve}


def scored_steps(steps: int) -> list[int]:
    """The steps of a `steps`-step run whose checkpoints are scored (SCORED)."""
    return [round(f * steps) for f in SCORED]


def posthoc_checkpoint(run: Path, sigma_rel: float) -> Path:
    out = run / "checkpoints" / f"posthoc-{sigma_rel:g}.safetensors"
    if not out.exists():
        write_posthoc_checkpoint(run / "checkpoints" / "last.safetensors", sigma_rel, out)
    return out


def steps_to_reach(curve: list[list[float]], target: float) -> float | None:
    """The training step at which an FD curve [(seconds, FD, step), …] first reaches `target`,
    linearly interpolated between scored checkpoints (the first one if reached there; None:
    never)."""
    previous = None
    for _, fd, step in curve:
        if fd <= target:
            if previous is None:
                return step
            step0, fd0 = previous
            return step0 + (step - step0) * (fd0 - target) / (fd0 - fd)
        previous = (step, fd)
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
    p.add_argument("--no-report", action="store_true",
                   help="train and score only (e.g. several processes, a share of the runs each)")
    args = p.parse_args()
    if not args.data.is_dir():
        print(f"skipped: no MNIST folder at {args.data} (give --data)")
        return
    provenance = Provenance()
    data, train, _, accuracy, extractor, reference, baseline = mnist_fd_setup(args.data, args.n)
    autoencoder = train_autoencoder_once(args, data)
    score = Scorer(argparse.Namespace(runs=args.runs, n=args.n, steps=args.sample_steps),
                   extractor, reference)
    runs, recipes = {}, {}
    for recipe in args.recipes:
        seeds = {}
        for seed in args.seeds:
            runs[recipe, seed], seeds[str(seed)] = train_and_score(args, recipe, seed, autoencoder,
                                                                   data, score)
        recipes[recipe] = {"what": RECIPES[recipe][0], "seeds": seeds}
    if args.no_report:
        return
    best = min(recipes, key=lambda r: np.mean([s["curve"][-1][1]
                                               for s in recipes[r]["seeds"].values()]))
    with torch.no_grad():
        posthoc = {best: {f"{s:g}": [score(posthoc_checkpoint(runs[best, seed], s), 0)["fd"]
                                     for seed in args.seeds] for s in SIGMA_RELS}}
    results = {"steps": args.steps, "scored_steps": scored_steps(args.steps),
               "n": args.n, "sample_steps": args.sample_steps,
               "seeds": args.seeds, "n_train": len(train), "evaluator": extractor.identity,
               "evaluator_accuracy": accuracy, "baseline": baseline, "today": TODAY,
               "best": best, "recipes": recipes, "posthoc": posthoc,
               "configs": {r: {"diffusion": to_dict(RECIPES[r][1]), "objective": to_dict(RECIPES[r][2])}
                           for r in args.recipes}}
    print(write_report("objectives", TITLE, results, render, provenance, plot))


def seconds_per_step(curve: list[list[float]]) -> float:
    """Median training seconds per step between consecutive scored checkpoints (a resumed run's
    clock restarts: intervals across a restart are left out)."""
    return float(np.median([(t1 - t0) / (s1 - s0) for (t0, _, s0), (t1, _, s1)
                            in zip(curve, curve[1:]) if t1 > t0]))


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
        reach = [steps_to_reach(s["curve"], target) for s in r["seeds"].values()]
        per_step = [seconds_per_step(s["curve"]) for s in r["seeds"].values()]
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
              f"accuracy {results['evaluator_accuracy']:.4f}), at the checkpoints of "
              f"steps {', '.join(map(str, results['scored_steps']))}."),
             f"Real-vs-real baseline (held-out vs training, n = {results['n']}): FD "
             f"{results['baseline']:.2f}. Target: today's mean final FD {s['target']:.2f} (at step "
             f"{results['steps']}).", "",
             "| recipe | final FD (mean ± sd over seeds) | vs today | s/step | reaches today's "
             "final FD at step (per seed) | speed-up (mean) |",
             "|---|---|---|---|---|---|"]
    for recipe, r in s["recipes"].items():
        change = (np.mean(r["finals"]) / np.mean(today["finals"]) - 1) * 100
        first = results["scored_steps"][0]  # reached there: at most that many steps
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
                   "final FD (linear interpolation between scored checkpoints), per seed, averaged; "
                   "in training time the same, as a step costs the same in every recipe (s/step, "
                   "measured in the runs, moves with whatever else ran on this shared machine). "
                   "\"≤\": reached at the first scored checkpoint already, so the speed-up is a lower "
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
    """FD over training steps per recipe (mean ± sd over seeds at each scored checkpoint), and the
    post-hoc EMA sweep."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for recipe, r in results["recipes"].items():
        fds = np.array([[fd for _, fd, _ in s["curve"]] for s in r["seeds"].values()])  # (seeds, n)
        steps = results["scored_steps"]
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
