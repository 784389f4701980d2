"""The guidance family on the digits, on one Pareto chart: class accuracy against FD as each method's
strength grows.

Models (trained once, resumed when their run folders exist, under --root): the KL-f4 digits
autoencoder; the class model `ldm-digits` with 10 % condition dropout (classifier-free guidance),
its own step-350 checkpoint as the weak model of autoguidance (a less-trained version of the same
model, Karras et al. 2024); the unconditional `ldm-digits` (no labels) with two noise-aware
classifiers trained on its latents: plain cross-entropy, and the entropy-aware objective (ECT,
λ = 0.2). Methods: CFG; CFG in a σ interval; autoguidance; classifier guidance of the unconditional
model; the same with the entropy-aware (EDS) scale, with the plain and with the ECT classifier.

Every point: n samples per seed (class i mod 10), dpmpp_2m 20 steps; accuracy of the evaluator
classifier on the requested class, FD, precision and recall in its features against the training
split, real-vs-real baselines at the same n; mean ± sd over the seeds.

    python experiments/guidance_family.py [--n 400] [--seeds 2]   # → reports/guidance-family-digits
    python experiments/guidance_family.py --data data.dataset=mnist data.path=../shared/data/mnist \
        --root runs/guidance-family/mnist --name guidance-family-mnist
"""

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch

from latentdiff.checkpoints import load_latent_diffusion, read_metadata
from latentdiff.checkpoints.models import load_classifier
from latentdiff.config import (AutoencoderTrainConfig, ClassifierTrainConfig,
                               LatentDiffusionTrainConfig, load_config)
from latentdiff.data import load_dataset, split_holdout, to_model_range
from latentdiff.metrics.classifier import classify, load_or_train_classifier
from latentdiff.metrics.distribution import manifold_metrics, neighbour_radii
from latentdiff.metrics.frechet import FeatureStats, frechet_distance
from latentdiff.pipelines import generate
from latentdiff.pipelines.guides import Guides
from latentdiff.train.autoencoder import train_autoencoder
from latentdiff.train.classifier import train_classifier
from latentdiff.train.diffusion import train_latent_diffusion
# experiments/ (the script's folder)
from few_step import run_minutes
from report import Provenance, shown_path, write_report

TITLE = "The guidance family on the digits: class accuracy against FD"
WEAK_STEP = 350
INTERVAL = (0.3, 5.0)  # σ of the guidance interval (the schedule's σ runs 0.04 … 84)
SWEEPS = {  # method → strengths
    "CFG": (1.0, 1.5, 2.0, 3.0, 4.0, 6.0),
    "CFG, σ interval": (1.0, 1.5, 2.0, 3.0, 4.0, 6.0),
    "autoguidance": (1.0, 1.5, 2.0, 3.0, 4.0),
    "classifier": (0.0, 1.0, 2.0, 4.0, 8.0, 16.0),
    "classifier, EDS scale": (0.25, 0.5, 1.0, 2.0, 4.0),
    "ECT classifier": (1.0, 2.0, 4.0, 8.0, 16.0),
    "ECT classifier, EDS scale": (0.25, 0.5, 1.0, 2.0, 4.0),
}


def trained(cfg, train) -> Path:
    """The last checkpoint of the run `cfg` names when it has finished, read without the run
    folder's lock (which a training process keeps until it ends, so that two of these scripts can
    share models); else `train(cfg, resume=True)`."""
    last = Path(cfg.train.out_dir) / "checkpoints" / "last.safetensors"
    if last.is_file() and read_metadata(last).get("train_state", {}).get("step") == cfg.train.max_steps:
        return last
    return train(cfg, resume=True)


def train_first_stage(root: Path, data: tuple[str, ...]) -> Path:
    """The KL-f4 digits autoencoder on the data `data` (config overrides) names, under root."""
    return trained(load_config(AutoencoderTrainConfig, "ae-kl-f4-digits", [
        *data, f"train.out_dir={root / 'autoencoder'}"]), train_autoencoder)


def train_ldm(root: Path, ae: Path, name: str, data: tuple[str, ...], *extra: str) -> Path:
    """An `ldm-digits` variant (`extra` overrides) on the autoencoder `ae`, under root/name."""
    return trained(load_config(LatentDiffusionTrainConfig, "ldm-digits", [
        f"autoencoder={ae}", *data, f"train.out_dir={root / name}", *extra]), train_latent_diffusion)


def train_models(root: Path, classifier_steps: int, data: tuple[str, ...]) -> dict:
    ae = train_first_stage(root, data)
    cond = train_ldm(root, ae, "class", data, "conditioning.drop_prob=0.1", "unet.num_classes=11",
                     "train.keep_checkpoints=true", f"train.checkpoint_every={WEAK_STEP}")
    uncond = train_ldm(root, ae, "unconditional", data, "unet.num_classes=null")
    classifiers = {name: train_classifier(load_config(ClassifierTrainConfig, "classifier-digits", [
        f"model={uncond}", *data, f"train.out_dir={root / name}",
        f"train.max_steps={classifier_steps}",
        f"entropy_weight={weight}"]), resume=True) for name, weight in (("classifier", 0.0),
                                                                         ("classifier-ect", 0.2))}
    return {"autoencoder": ae, "class": cond,
            "weak": cond.parent / f"step-{WEAK_STEP:07d}.safetensors", "unconditional": uncond,
            **classifiers}


class Scorer:
    """The evaluator classifier of the digits, its features of the training split (the FD
    reference and the precision/recall manifold), and the real-vs-real baselines at n."""

    def __init__(self, n: int, data: tuple[str, ...]):
        data_cfg = load_config(LatentDiffusionTrainConfig, "ldm-digits",
                               ["autoencoder=x", *data]).data
        train, heldout = split_holdout(load_dataset(data_cfg), data_cfg.holdout,
                                       data_cfg.split_seed)
        self.evaluator, self.evaluator_accuracy = load_or_train_classifier(data_cfg,
                                                                          split=(train, heldout))
        self.real = classify(self.evaluator, to_model_range(train.images))[1]
        self.reference = FeatureStats.of(self.real)
        self.radii = neighbour_radii(self.real, (3, 5))
        held = classify(self.evaluator, to_model_range(heldout.images[:n]))[1]
        self.baseline = {"fd": frechet_distance(FeatureStats.of(held), self.reference),
                         **self.manifold(held)}
        self.n = n

    def manifold(self, features) -> dict:
        m = manifold_metrics(self.real, features, real_radii=self.radii)
        return {"precision": m.precision, "recall": m.recall}

    def __call__(self, model, seeds: tuple[int, ...], conditional: bool, guides=None,
                 **options) -> dict:
        labels = (torch.arange(self.n) % 10).tolist()
        rows = []
        for seed in seeds:
            kwargs = {"class_labels": labels} if conditional else {}
            if guides is not None:
                guides = dataclasses.replace(guides, classes=labels)
            images = generate(model, seeds=[seed * self.n + i for i in range(self.n)],
                              sampler="dpmpp_2m", steps=20, guides=guides, **kwargs, **options)
            predicted, features = classify(self.evaluator, images)
            rows.append({"accuracy": float((predicted == torch.tensor(labels)).float().mean()),
                         "fd": frechet_distance(FeatureStats.of(features), self.reference),
                         **self.manifold(features)})
        return {key: [r[key] for r in rows] for key in rows[0]}


def sweep(method: str, scale: float, paths: dict, score: Scorer, seeds) -> dict:
    if method.startswith("CFG") or method == "autoguidance":
        model = load_latent_diffusion(paths["class"])
        options = {"guidance_scale": scale}
        if method == "CFG, σ interval":
            options["guidance_interval"] = INTERVAL
        if method == "autoguidance":
            options["guides"] = Guides(autoguide=load_latent_diffusion(paths["weak"]))
        return score(model, seeds, True, **options)
    model = load_latent_diffusion(paths["unconditional"])
    name = "classifier-ect" if method.startswith("ECT") else "classifier"
    guides = Guides(load_classifier(paths[name], model), classifier_scale=scale,
                    entropy_aware="EDS" in method)
    return score(model, seeds, False, guides=guides)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=400)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--classifier-steps", type=int, default=2000)
    p.add_argument("--root", type=Path, default=Path("runs/guidance-family/digits"))
    p.add_argument("--methods", nargs="+", default=list(SWEEPS))
    p.add_argument("--name", default="guidance-family-digits")
    p.add_argument("--data", nargs="*", default=[], metavar="KEY=VALUE",
                   help="data overrides of every model, e.g. data.dataset=mnist "
                        "data.path=../shared/data/mnist (default: the bundled digits)")
    args = p.parse_args()
    provenance = Provenance()
    data = tuple(args.data)
    paths = train_models(args.root, args.classifier_steps, data)
    score = Scorer(args.n, data)
    seeds = tuple(range(args.seeds))
    rows = []
    for method in args.methods:
        for scale in SWEEPS[method]:
            rows.append({"method": method, "scale": scale,
                         **sweep(method, scale, paths, score, seeds)})
            print({k: (np.round(v, 4).tolist() if isinstance(v, list) else v)
                   for k, v in rows[-1].items()}, flush=True)
    accuracy = {name: read_accuracy(paths[name]) for name in ("classifier", "classifier-ect")}
    results = {"n": args.n, "seeds": args.seeds, "interval": list(INTERVAL), "data": list(data),
               "weak_step": WEAK_STEP, "evaluator_heldout_accuracy": score.evaluator_accuracy,
               "baseline": score.baseline, "rows": rows, "classifier_accuracy": accuracy,
               "models": {k: shown_path(v) for k, v in paths.items()},
               "minutes": {k: run_minutes(Path(v).parent.parent) for k, v in paths.items()
                           if k != "weak"}}
    print(write_report(args.name, TITLE, results, render, provenance, plot=plot))


def read_accuracy(checkpoint: Path) -> list[dict]:
    return read_metadata(checkpoint).get("heldout_accuracy", [])


def _mean(values) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def render(results: dict) -> list[str]:
    b = results["baseline"]
    data = f"Data: `{' '.join(results['data'])}`. " if results.get("data") else ""
    lines = [f"{data}n = {results['n']} samples per seed (class i mod 10), {results['seeds']} seeds, "
             "dpmpp_2m 20 steps. Accuracy: the evaluator classifier's on the requested class "
             f"(its held-out accuracy on real digits {results['evaluator_heldout_accuracy']:.3f}); "
             "FD, precision and recall in its features against the training split. Real-vs-real "
             f"at the same n: FD {b['fd']:.3f}, precision {b['precision']:.3f}, recall "
             f"{b['recall']:.3f}. σ interval: {results['interval']}" + (
                 f"; the autoguidance model is the class model's own step-{results['weak_step']} "
                 "checkpoint." if any(r["method"] == "autoguidance" for r in results["rows"])
                 else "."), "",
             "| method | strength | accuracy | FD | precision | recall |",
             "|---|---|---|---|---|---|"]
    for r in results["rows"]:
        lines.append(f"| {r['method']} | {r['scale']:g} | {_mean(r['accuracy'])} | {_mean(r['fd'])} "
                     f"| {_mean(r['precision'])} | {_mean(r['recall'])} |")
    for name, levels in results["classifier_accuracy"].items():
        shown = ", ".join(f"σ {r['sigma']:g}: {r['accuracy']:.3f}" for r in levels)
        lines += ["", f"Held-out accuracy of the noise-aware `{name}` on noised latents: {shown}."]
    minutes = ", ".join(f"{k} {v} min" for k, v in results["minutes"].items() if v is not None)
    lines += ["", f"Training (loop minutes): {minutes}."]
    return lines


def plot(plt, results: dict):
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for method in dict.fromkeys(r["method"] for r in results["rows"]):
        rows = [r for r in results["rows"] if r["method"] == method]
        x = [np.mean(r["accuracy"]) for r in rows]
        y = [np.mean(r["fd"]) for r in rows]
        ax.plot(x, y, marker="o", label=method)
        for r, xi, yi in zip(rows, x, y):
            ax.annotate(f"{r['scale']:g}", (xi, yi), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    ax.axhline(results["baseline"]["fd"], color="grey", linestyle=":", label="real vs real")
    ax.set_xlabel("class accuracy (evaluator)")
    ax.set_ylabel("FD (evaluator features)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set_title(TITLE, fontsize=10)
    return fig


if __name__ == "__main__":
    main()
