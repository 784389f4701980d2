"""UNet, U-ViT and DiT as the denoiser of one LDM-4, at equal training time on this CPU: FD over
time, ≥ 2 training seeds, and the U-ViT long-skip ablation.

Data: the MNIST unconditional LDM-4 or the digits class model (`--data`), on the KL-f4 autoencoder
of that data (3×8×8 latents), trained as `ldm-digits` does (batch 64, warm-up 100, the same schedule
and ε-prediction) with only the network changed. Networks: today's UNet; each transformer with 2×2
patches (16 tokens: about the UNet's parameters *and* GFLOPs) and with 1×1 patches (64 tokens: about
its parameters at 3–4× its GFLOPs); the U-ViT with 2×2 patches without long skips; and each of UNet,
U-ViT and DiT (both patch sizes) trained as a rectified flow instead of ε-prediction (`, flow`: the
factorial that explains the transformers' gap). Equal time: one calibration measures every network's
seconds per training step (forward, backward, AdamW at batch 64, round-robin so that load on the
machine hits all alike), and each run gets `--minutes` worth of its own steps, kept at 1/3, 2/3 and
3/3 of them; the calibration is kept in the run root (calibration.json), so reruns take the same
steps whatever the machine's speed. Each kept checkpoint: n samples (class i mod 10 for the class
model), dpmpp_2m 20 steps, FD (and class accuracy) in the evaluator's features against the training
split; mean ± sd over the training seeds.

    python experiments/backbones.py --data mnist     # → reports/backbones-mnist
    python experiments/backbones.py --data digits    # → reports/backbones-digits
    python experiments/backbones.py --data digits --report backbones-factorial-digits --networks \
        UNet "UNet, flow" "U-ViT p2" "U-ViT p2, flow" "DiT p2" "DiT p2, flow" "U-ViT p1, flow" \
        "DiT p1, flow"       # (+ "U-ViT p1" "DiT p1": the ε cells with 1×1 patches)
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from latentdiff.checkpoints import load_latent_diffusion
from latentdiff.config import LatentDiffusionTrainConfig, load_config
from latentdiff.files import write_text
from latentdiff.network import build_network
from latentdiff.train.diffusion import train_latent_diffusion
# experiments/ (the script's folder)
from few_step import run_minutes
from guidance_family import Scorer, train_first_stage, trained
from report import Provenance, shown_path, write_report

DATA = {"mnist": ("data.dataset=mnist", "data.path=../shared/data/mnist"), "digits": ()}
TITLE = "UNet, U-ViT and DiT at equal training time"


def _uvit(width, depth, patch, *extra):
    return ("backbone=uvit", "uvit.in_channels=3", "uvit.out_channels=3", f"uvit.width={width}",
            f"uvit.depth={depth}", f"uvit.num_heads={width // 64}", f"uvit.patch_size={patch}",
            *extra)


def _dit(hidden, depth, patch):
    return ("backbone=dit", "dit.in_channels=3", "dit.out_channels=3", f"dit.hidden_size={hidden}",
            f"dit.depth={depth}", f"dit.num_heads={hidden // 64}", f"dit.patch_size={patch}")


# name → (config overrides, learning rate). A probe on the digits (400 steps, a 2×2-patch DiT of width
# 192) gave about the same training loss at lr 1e-3 as at 3e-4 (0.119 and 0.121, the mean of the last 6
# logged), so all keep ldm-digits' 1e-3; the U-ViT's probe was not finished (docs/backbones.md)
NETWORKS = {
    "UNet": ((), 1e-3),
    "U-ViT p2": (_uvit(256, 7, 2), 1e-3),
    "DiT p2": (_dit(256, 6, 2), 1e-3),
    "U-ViT p1": (_uvit(192, 7, 1), 1e-3),
    "DiT p1": (_dit(192, 6, 1), 1e-3),
    "U-ViT p2, no long skips": (_uvit(256, 7, 2, "uvit.long_skip=false"), 1e-3),
}
# the same networks trained as a rectified flow (the recipe docs/training.md measured best): the
# factorial {ε, flow} × {U-ViT, DiT} × {2×2, 1×1 patches} beside the UNet with each objective
FLOW = ("diffusion.prediction=flow", "diffusion.schedule.kind=flow", "objective.sigma_sampler=logit_normal")
FACTORIAL = ["UNet", "U-ViT p2", "DiT p2", "U-ViT p1", "DiT p1"]
NETWORKS.update({f"{name}, flow": ((*NETWORKS[name][0], *FLOW), NETWORKS[name][1])
                 for name in FACTORIAL})


def run_config(name: str, seed: int, steps: int, root: Path, ae: Path, data: str
               ) -> LatentDiffusionTrainConfig:
    overrides, lr = NETWORKS[name]
    classes = "10" if data == "digits" else "null"
    backbone = next((o.split("=")[1] for o in overrides if o.startswith("backbone=")), "unet")
    every = max(1, steps // 3)
    return load_config(LatentDiffusionTrainConfig, "ldm-digits", [
        f"autoencoder={ae}", *DATA[data], *overrides, f"{backbone}.num_classes={classes}",
        f"train.lr={lr}", f"train.seed={seed}", f"train.max_steps={3 * every}",
        f"train.checkpoint_every={every}", "train.keep_checkpoints=true",
        f"train.out_dir={root / name.replace(' ', '').replace(',', '-')}-s{seed}"])


def calibrate(configs: dict, rounds: int = 3, steps: int = 4) -> dict:
    """Seconds per training step of each network (forward, backward, AdamW; batch 64 of 3×8×8
    latents), the median over `rounds` round-robin passes of `steps` steps after one warm-up."""
    nets = {}
    for name, cfg in configs.items():
        torch.manual_seed(0)
        net = build_network(cfg.network)
        nets[name] = (net, torch.optim.AdamW(net.parameters(), lr=1e-4))
    x, t = torch.randn(64, 3, 8, 8), torch.rand(64) * 999
    labels = torch.arange(64) % 10

    def step(name):
        net, opt = nets[name]
        cond = {"class_labels": labels} if net.config.num_classes else {}
        net(x, t, **cond).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()

    times = {name: [] for name in nets}
    for name in nets:
        step(name)
    for _ in range(rounds):
        for name in nets:
            start = time.perf_counter()
            for _ in range(steps):
                step(name)
            times[name].append((time.perf_counter() - start) / steps)
    return {name: statistics.median(v) for name, v in times.items()}


def calibration(root: Path, configs: dict, data: str) -> dict:
    """Seconds per step of each network: measured once (`calibrate`) and kept in
    root/calibration.json, so that a rerun (another subset of networks, a finished run read back)
    gives every run the steps it had; a network new to the file is measured beside one already in
    it and put on the file's scale, or takes the time of the same network trained otherwise."""
    path = root / "calibration.json"
    stored = json.loads(path.read_text()) if path.is_file() else {}
    new = [name for name in configs if name not in stored]
    # the same network trained otherwise (another objective) takes the same time per step (the loss
    # costs nothing beside it): one measurement per network, not a second one with its own noise
    networks = {name: configs[name].network for name in new}
    networks.update({name: run_config(name, 0, 3, root, root, data).network
                     for name in stored if name in NETWORKS})
    measure = {}
    for name in new:
        twin = next((o for o in (*stored, *measure) if networks.get(o) == networks[name]), None)
        if twin is None:
            measure[name] = configs[name]
    if measure:
        # networks added later: measured beside a stored one and scaled by its ratio, so that all
        # are on the first calibration's scale whatever the machine's load now
        reference = next((name for name in stored if name in NETWORKS), None)
        beside = {reference: run_config(reference, 0, 3, root, root, data)} if reference else {}
        measured = calibrate({**measure, **beside})
        scale = stored[reference] / measured[reference] if reference else 1.0
        stored.update({name: measured[name] * scale for name in measure})
    for name in new:
        stored[name] = stored[next(o for o in stored if networks.get(o) == networks[name])]
    if new:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps(stored, indent=1) + "\n")
    return {name: stored[name] for name in configs}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", choices=list(DATA), default="mnist")
    p.add_argument("--minutes", type=float, default=4.0, help="training time of every run")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--n", type=int, default=400)
    p.add_argument("--networks", nargs="+", default=list(NETWORKS))
    p.add_argument("--root", type=Path, default=None)
    p.add_argument("--report", default=None, help="the report's name (default backbones-DATA)")
    p.add_argument("--stop-after", choices=("calibration", "training", "scoring"), default=None,
                   help="stop once the networks are calibrated, trained or scored (several "
                        "processes can train and score disjoint networks after one calibration; a "
                        "last run reads the kept scores and writes the report)")
    args = p.parse_args()
    provenance = Provenance()
    root = args.root or Path("runs/backbones") / args.data
    data = DATA[args.data]
    ae = train_first_stage(root, data)
    seconds = calibration(root, {name: run_config(name, 0, 3, root, ae, args.data)
                                 for name in args.networks}, args.data)
    budget = args.minutes * 60
    if args.stop_after in ("calibration", "training"):
        for name in args.networks if args.stop_after == "training" else ():
            for seed in range(args.seeds):
                trained(run_config(name, seed, int(budget / seconds[name]), root, ae, args.data),
                        train_latent_diffusion)
        return
    score = Scorer(args.n, data)
    rows = []
    for name in args.networks:
        steps = int(budget / seconds[name])
        model_row = {"network": name, "lr": NETWORKS[name][1], "overrides": list(NETWORKS[name][0]),
                     "seconds_per_step": seconds[name], "points": []}
        for seed in range(args.seeds):
            cfg = run_config(name, seed, steps, root, ae, args.data)
            last = trained(cfg, train_latent_diffusion)
            every = cfg.train.checkpoint_every
            for k in (1, 2, 3):
                path = last if k == 3 else last.parent / f"step-{k * every:07d}.safetensors"
                point = scored(path, seed, score, args.data == "digits")
                point.update(step=k * every, minutes=k * every * seconds[name] / 60)
                model_row["points"].append(point)
                model_row.update(parameters=point.pop("parameters"), gflops=point.pop("gflops"),
                                 steps=3 * every)
            model_row.setdefault("loop_minutes", []).append(run_minutes(last.parent.parent))
            model_row.setdefault("runs", []).append(shown_path(last))
        if args.stop_after == "scoring":
            continue
        rows.append(model_row)
        print({k: v for k, v in model_row.items() if k != "points"}, flush=True)
        for point in model_row["points"]:
            print("  ", {k: round(v, 4) if isinstance(v, float) else v for k, v in point.items()},
                  flush=True)
    if args.stop_after == "scoring":
        return
    results = {"data": args.data, "minutes": args.minutes, "seeds": args.seeds, "n": args.n,
               "baseline": score.baseline, "evaluator_heldout_accuracy": score.evaluator_accuracy,
               "autoencoder": shown_path(ae), "rows": rows}
    print(write_report(args.report or f"backbones-{args.data}", f"{TITLE} ({args.data})", results,
                       render, provenance, plot=plot))


def scored(path: Path, seed: int, score: Scorer, conditional: bool) -> dict:
    """FD, accuracy, precision, recall, sampling seconds and the network's cost of one checkpoint's
    samples, kept beside it (PATH.scores-nN-sSEED.json) so that a later run reads them back."""
    kept = path.with_name(f"{path.name}.scores-n{score.n}-s{seed}.json")
    if kept.is_file():
        return json.loads(kept.read_text())
    model = load_latent_diffusion(path)
    cost = model.network_cost()
    start = time.perf_counter()
    result = score(model, (seed,), conditional)
    point = {"seed": seed, **{key: result[key][0] for key in ("fd", "accuracy", "precision", "recall")},
             "sampling_s": time.perf_counter() - start,
             "parameters": cost.parameters, "gflops": cost.gflops}
    write_text(kept, json.dumps(point) + "\n")
    return dict(point)


def _final(row: dict, key: str) -> list[float]:
    last = max(p["step"] for p in row["points"])
    return [p[key] for p in row["points"] if p["step"] == last]


def _mean(values) -> str:
    return f"{np.mean(values):.2f} ± {np.std(values):.2f}"


def _objective(row: dict) -> str:
    return "flow" if "diffusion.prediction=flow" in row["overrides"] else "eps"


def render(results: dict) -> list[str]:
    conditional = results["data"] == "digits"
    unet = {_objective(r): np.mean(_final(r, "fd")) for r in results["rows"]
            if r["network"].startswith("UNet")}
    both = len(unet) > 1  # the factorial's second objective: ratios to the UNet trained alike too
    lines = [f"Data: {results['data']} ({'the class model, 10 classes' if conditional else 'unconditional'}"
             f"), 3×8×8 latents. Every network trained for {results['minutes']:g} minutes' worth of "
             "its own calibrated steps (seconds per step below, measured round-robin in one "
             f"process), {results['seeds']} training seeds; n = {results['n']} samples per seed, "
             "dpmpp_2m 20 steps; FD in the evaluator's features against the training split "
             f"(real-vs-real at the same n: {results['baseline']['fd']:.3f}).", "",
             "| network | parameters | GFLOPs / eval | s / step | steps | lr | FD at 1/3 | FD at 2/3 "
             "| FD at the end | vs UNet" + (" (ε) | vs UNet, same objective |" if both else " |")
             + (" accuracy |" if conditional else ""),
             "|---|---|---|---|---|---|---|---|---|---|" + ("---|" * (both + conditional))]
    for r in results["rows"]:
        steps = sorted({p["step"] for p in r["points"]})
        fds = [_mean([p["fd"] for p in r["points"] if p["step"] == s]) for s in steps]
        final = np.mean(_final(r, "fd"))
        same = f" {final / unet[_objective(r)]:.2f}× |" if both else ""
        lines.append(f"| {r['network']} | {r['parameters'] / 1e6:.2f} M | {r['gflops']:.3f} | "
                     f"{r['seconds_per_step']:.3f} | {r['steps']} | {r['lr']:g} | "
                     + " | ".join(fds) + f" | {final / unet['eps']:.2f}× |{same}"
                     + (f" {_mean(_final(r, 'accuracy'))} |" if conditional else ""))
    loops = ", ".join(f"{r['network']} {'/'.join(f'{m:g}' for m in r['loop_minutes'] if m)}"
                      for r in results["rows"])
    lines += _effects(results["rows"])
    lines += ["", f"Training-loop minutes as logged (they include EMA, data and concurrent load, so "
              f"they differ from the calibrated budget): {loops}."]
    return lines


def _effects(rows: list[dict]) -> list[str]:
    """The factorial's main effects: for each factor, the geometric mean of the final-FD ratio
    between its two levels over the pairs of transformer cells that differ only in it (and are both
    measured); none when no such pair is."""
    fd = {r["network"]: np.mean(_final(r, "fd")) for r in rows}
    if not any(_objective(r) == "flow" for r in rows):  # not the factorial
        return []
    cells = {(family, patch, objective): f"{family} {patch}{objective}" for family in ("U-ViT", "DiT")
             for patch in ("p2", "p1") for objective in ("", ", flow")}
    factors = {"flow / ε": (2, ", flow", ""), "1×1 / 2×2 patches": (1, "p1", "p2"),
               "DiT / U-ViT": (0, "DiT", "U-ViT")}
    lines = []
    for label, (axis, a, b) in factors.items():
        pairs = [(name, cells[(*key[:axis], b, *key[axis + 1:])]) for key, name in cells.items()
                 if key[axis] == a]
        ratios = {f"{x} vs {y}": fd[x] / fd[y] for x, y in pairs if x in fd and y in fd}
        if ratios:
            lines.append(f"- {label}: {np.exp(np.mean(np.log(list(ratios.values())))):.2f}× ("
                         + "; ".join(f"{pair}: {r:.2f}" for pair, r in ratios.items()) + ")")
    return ["", "Main effects on the transformers' final FD (geometric mean of the ratio between a "
            "factor's levels over the measured pairs of cells that differ only in it; < 1: the first "
            "level is better):", *lines] if lines else []


def plot(plt, results: dict):
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for r in results["rows"]:
        steps = sorted({p["step"] for p in r["points"]})
        minutes = [np.mean([p["minutes"] for p in r["points"] if p["step"] == s]) for s in steps]
        fd = [[p["fd"] for p in r["points"] if p["step"] == s] for s in steps]
        ax.errorbar(minutes, [np.mean(f) for f in fd], yerr=[np.std(f) for f in fd], marker="o",
                    capsize=3, label=f"{r['network']} ({r['gflops']:.2f} GFLOPs)")
    ax.axhline(results["baseline"]["fd"], color="grey", linestyle=":", label="real vs real")
    ax.set_xlabel("training minutes (calibrated)")
    ax.set_ylabel("FD (evaluator features)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set_title(f"{TITLE} ({results['data']})", fontsize=10)
    return fig


if __name__ == "__main__":
    main()
