"""Paper Sec. 4.1 (Fig. 6-7) at small scale: pixel-space diffusion (LDM-1) against LDM-f2/f4/f8/f16
on MNIST, at about the same UNet parameter count and the same wall-clock training budget on this
machine.

Per factor f > 1, a KL autoencoder is trained first (its time is reported apart, as the paper reuses
its first stages); then every diffusion model trains for `--minutes` of training-loop time with a
checkpoint kept every ~1/10 of the budget. Each kept checkpoint is scored (FD of --n unconditional
DDIM samples in the MNIST classifier's features against the training split, seed 0); the last one
over --seeds seeds, with its sampling throughput. The report asks the paper's question: how much
sooner does each LDM reach the best FD the pixel model reached?

    python experiments/ldm_tradeoff.py [--data ../shared/data/mnist] [--minutes 6] [--factors 1 2 4 8 16]
                                       [--n 500] [--seeds 3] [--steps 20] [--runs runs/ldm-tradeoff]

Skips (exit 0) when the MNIST folder is absent. Finished runs and scores are reused when run again.
"""

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from latentdiff.checkpoints import load_latent_diffusion
from latentdiff.checkpoints.models import load_autoencoder
from latentdiff.config import (AutoencoderConfig, AutoencoderLossConfig,
                               AutoencoderTrainConfig, DataConfig,
                               DiffusionConfig, LatentDiffusionTrainConfig,
                               NoiseScheduleConfig, PreviewConfig,
                               TrainConfig, UNetConfig)
from latentdiff.data import load_dataset, split_holdout, to_model_range, to_uint8
from latentdiff.files import write_text
from latentdiff.metrics.classifier import load_or_train_classifier
from latentdiff.metrics.features import classifier_features
from latentdiff.metrics.frechet import FeatureStats, frechet_distance
from latentdiff.metrics.reconstruction import reconstruct
from latentdiff.evaluation.sample_quality import cached_features, draw_samples
from latentdiff.train.autoencoder import train_autoencoder
from latentdiff.train.diffusion import PIXELS, train_latent_diffusion
from latentdiff.unet import UNetModel
# experiments/report.py (the script's folder is on sys.path)
from report import Provenance, write_report

TITLE = "Pixel-space vs latent diffusion at equal parameters and wall clock (MNIST)"

# c grows with f, as the paper's first stages (f4 c3, f8 c4, f16 c8)
LATENT_CHANNELS = {2: 2, 4: 3, 8: 4, 16: 8}
CHANNEL_MULT = {2: (1, 2), 4: (1, 1, 2), 8: (1, 1, 2, 2), 16: (1, 1, 2, 2, 2)}  # f = 2^(levels - 1)
SNAPSHOTS = 10


def autoencoder_config(f: int, data: DataConfig, out: Path, steps: int) -> AutoencoderTrainConfig:
    """A small KL autoencoder 1×32×32 → c×(32/f)×(32/f): L1 + KL (no perceptual or adversarial term,
    as for the bundled digits), 32 base channels."""
    model = AutoencoderConfig(in_channels=1, base_channels=32, channel_mult=CHANNEL_MULT[f],
                              num_res_blocks=1, latent_channels=LATENT_CHANNELS[f],
                              resolution=32, norm_groups=8)
    return AutoencoderTrainConfig(model=model,
                                  loss=AutoencoderLossConfig(perceptual="none", kl_weight=1e-6,
                                                             disc_start=10 ** 9),
                                  data=data,
                                  train=TrainConfig(out_dir=str(out),
                                                    max_steps=steps, batch_size=32,
                                                    lr=2e-3, warmup_steps=50, log_every=50,
                                                    sample_every=0, checkpoint_every=steps))


def unet_config(f: int) -> UNetConfig:
    """About 1.1 M parameters at every f: 32 channels, levels ×1 ×2 ×2; at f = 16 (2×2 latents) two
    levels with two ResBlocks each, as the paper also changes depth with f to keep the parameter
    count."""
    c = 1 if f == 1 else LATENT_CHANNELS[f]
    if f == 16:
        return UNetConfig(in_channels=c, out_channels=c, model_channels=32,
                          channel_mult=(1, 2), num_res_blocks=2,
                          attention_resolutions=(1, 2), head_channels=32)
    return UNetConfig(in_channels=c, out_channels=c, model_channels=32,
                      channel_mult=(1, 2, 2), num_res_blocks=1,
                      attention_resolutions=(2, 4), head_channels=32)


def seconds_per_step(unet: UNetConfig, side: int, batch: int) -> float:
    """Median time of one training step (forward, backward, AdamW) on random latents: sets the
    checkpoint interval."""
    model = UNetModel(unet)
    optimizer = torch.optim.AdamW(model.parameters(), 1e-4)
    x, t = torch.randn(batch, unet.in_channels, side, side), torch.randint(0, 1000, (batch,))
    times = []
    for _ in range(4):
        start = time.perf_counter()
        loss = (model(x, t) - x).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return float(np.median(times[1:]))


def diffusion_config(f: int, autoencoder: str, data: DataConfig, out: Path,
                     minutes: float) -> LatentDiffusionTrainConfig:
    unet = unet_config(f)
    every = max(1, round(60 * minutes / seconds_per_step(unet, 32 // f, 64) / SNAPSHOTS))
    schedule = NoiseScheduleConfig(kind="scaled_linear", num_timesteps=1000,
                                   beta_start=0.0015, beta_end=0.0195)
    return LatentDiffusionTrainConfig(
        autoencoder=autoencoder, unet=unet, diffusion=DiffusionConfig(schedule=schedule),
        data=data, ema_decay=0.999,
        train=TrainConfig(out_dir=str(out), max_steps=10 ** 7, max_minutes=minutes,
                          batch_size=64, lr=1e-3,
                          warmup_steps=100, log_every=every, sample_every=0, checkpoint_every=every,
                          keep_checkpoints=True),
        preview=PreviewConfig(sampler="ddim", steps=50, per_class=8))


def finished(run: Path) -> bool:
    """A run whose final preview grid exists (written after its last checkpoint)."""
    return any((run / "samples").glob("*.png"))


def train_all(args, data: DataConfig) -> dict[int, Path]:
    runs = {}
    for f in args.factors:
        autoencoder = PIXELS
        if f > 1:
            ae_run = args.runs / f"ae-f{f}"
            checkpoint = ae_run / "checkpoints" / "last.safetensors"
            if not finished(ae_run):  # a step budget: an interrupted run resumes
                print(f"training the f={f} autoencoder", flush=True)
                train_autoencoder(autoencoder_config(f, data, ae_run, args.ae_steps),
                                  resume=checkpoint.exists())
            autoencoder = str(checkpoint)
        run = args.runs / f"ldm-f{f}"
        if not finished(run):
            # an interrupted time budget cannot be resumed fairly: start again
            shutil.rmtree(run, ignore_errors=True)
            print(f"training LDM-f{f} for {args.minutes} min", flush=True)
            train_latent_diffusion(diffusion_config(f, autoencoder, data, run, args.minutes))
        runs[f] = run
    return runs


def log_times(run: Path) -> dict[int, float]:
    """Training-loop seconds at each logged training step (the metrics.jsonl of the run; evaluation
    lines, such as the autoencoder's held-out scores after the loop, have no loss and are left
    out)."""
    records = map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
    return {r["step"]: r["time_s"] for r in records if "loss" in r}


class Scorer:
    """FD of n samples of a checkpoint (seed, DDIM steps), cached in a JSON file next to the
    runs (several processes may score into one folder)."""

    def __init__(self, args, extractor, reference: FeatureStats):
        self.args, self.extractor, self.reference = args, extractor, reference
        self.path = args.runs / "scores.json"
        self.cache = json.loads(self.path.read_text()) if self.path.exists() else {}

    def __call__(self, checkpoint: Path, seed: int) -> dict:
        key = f"{checkpoint}|{seed}|{self.args.n}|{self.args.steps}"
        if key not in self.cache:
            model = load_latent_diffusion(checkpoint)
            start = time.perf_counter()
            images = draw_samples(model, self.args.n, seed, {}, 1.0,
                                  sampler="ddim", steps=self.args.steps)
            rate = self.args.n / (time.perf_counter() - start)
            fd = frechet_distance(FeatureStats.of(self.extractor(images)[0]), self.reference)
            self.cache[key] = {"fd": fd, "samples_per_s": rate}
            # merged with what other processes scoring into the same folder wrote meanwhile
            stored = json.loads(self.path.read_text()) if self.path.exists() else {}
            self.cache = {**stored, **self.cache}
            write_text(self.path, json.dumps(self.cache, indent=1))
            print(f"{checkpoint}: seed {seed} FD {fd:.2f}, {rate:.1f} samples/s", flush=True)
        return self.cache[key]


def reconstruction_fd(autoencoder_path: Path, held, extractor,
                      reference: FeatureStats, n: int) -> float:
    """FD of the autoencoder's reconstructions of n held-out images: the floor an LDM-f can
    reach."""
    recon = reconstruct(load_autoencoder(autoencoder_path), to_model_range(held.images[:n]))
    return frechet_distance(FeatureStats.of(extractor(to_uint8(recon))[0]), reference)


def first_time_at_or_below(curve: list[tuple[float, float]], target: float) -> float | None:
    """The first training time at which a (time, FD) curve reaches FD ≤ target (None: never)."""
    return next((t for t, fd in curve if fd <= target), None)


def name_of(f: int) -> str:
    return "pixel (LDM-1)" if f == 1 else f"LDM-{f}"


def plot(plt, results: dict):
    """FD over training time (log) per f, and final FD against sampling throughput."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for f, r in results["models"].items():
        left.plot([t / 60 for t, _ in r["curve"]], [fd for _, fd in r["curve"]],
                  marker="o", markersize=3,
                  label=name_of(int(f)))
        right.errorbar([r["samples_per_s"]], [np.mean(r["final_fd"])],
                       [np.std(r["final_fd"])], marker="o",
                       label=name_of(int(f)))
    for axis in (left, right):
        axis.axhline(results["baseline"], color="grey", linestyle="--", label="real vs real")
        axis.set_yscale("log")
        axis.set_ylabel("FD (classifier features)")
        axis.legend(fontsize=8)
    left.set_xscale("log")
    left.set_xlabel("training time, minutes (this machine)")
    right.set_xscale("log")
    right.set_xlabel("samples per second, DDIM (this machine)")
    for axis in (left.xaxis, right.xaxis):  # plain numbers on the log axes
        axis.set_major_formatter(ScalarFormatter())
        axis.set_minor_formatter(NullFormatter())
    return figure


def mnist_fd_setup(path: Path, n: int):
    """MNIST at 32 px with 5,000 held out, and what FD scoring needs: (data config, training split,
    held-out split (shuffled), the classifier evaluator's held-out accuracy, its feature extractor,
    the training split's feature statistics, the real-vs-real FD of n held-out images)."""
    data = DataConfig(dataset="mnist", path=str(path), image_size=32, holdout=5000)
    train, held = split_holdout(load_dataset(data), data.holdout, data.split_seed)
    classifier, accuracy = load_or_train_classifier(data, split=(train, held))
    extractor = classifier_features(classifier, "trained on the training split")
    reference = FeatureStats.of(cached_features(extractor, train.images, "mnist-32px-train").features)
    held = held.sample(len(held))
    baseline = frechet_distance(FeatureStats.of(extractor(held.images[:n])[0]), reference)
    return data, train, held, accuracy, extractor, reference, baseline


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path,
                   default=Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist")
    p.add_argument("--minutes", type=float, default=6.0,
                   help="training-loop budget of every diffusion model")
    p.add_argument("--factors", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--ae-steps", type=int, default=400)
    p.add_argument("--n", type=int, default=500, help="samples per FD")
    p.add_argument("--seeds", type=int, default=3, help="sampling seeds at the last checkpoint")
    p.add_argument("--steps", type=int, default=20, help="DDIM steps")
    p.add_argument("--runs", type=Path, default=Path("runs/ldm-tradeoff"))
    args = p.parse_args()
    if not args.data.is_dir():
        print(f"skipped: no MNIST folder at {args.data} (give --data)")
        return
    provenance = Provenance()
    data, train, held, accuracy, extractor, reference, baseline = mnist_fd_setup(args.data, args.n)
    runs = train_all(args, data)
    torch.set_grad_enabled(False)
    score = Scorer(args, extractor, reference)
    models = {}
    for f, run in runs.items():
        times = log_times(run)
        kept = sorted((run / "checkpoints").glob("step-*.safetensors"))
        finals = [score(kept[-1], seed) for seed in range(args.seeds)]
        models[str(f)] = {"curve": [(times[int(c.stem[5:])], score(c, 0)["fd"]) for c in kept],
                          "steps": int(kept[-1].stem[5:]), "final_fd": [s["fd"] for s in finals],
                          "params": sum(q.numel() for q in UNetModel(unet_config(f)).parameters()),
                          "samples_per_s": float(np.median([s["samples_per_s"] for s in finals]))}
        if f > 1:
            ae_run = args.runs / f"ae-f{f}"
            models[str(f)]["ae_minutes"] = max(log_times(ae_run).values()) / 60
            models[str(f)]["recon_fd"] = reconstruction_fd(ae_run / "checkpoints" / "last.safetensors", held,
                                                           extractor, reference, args.n)
    results = {"minutes": args.minutes, "n": args.n, "steps": args.steps,
               "seeds": args.seeds, "n_train": len(train),
               "evaluator_accuracy": accuracy,
               "evaluator": extractor.identity, "baseline": baseline,
               "models": models}
    print(write_report("ldm-tradeoff", TITLE, results, render, provenance, plot))


def render(results: dict) -> list[str]:
    """The report's body from its raw results."""
    models = {int(f): r for f, r in results["models"].items()}
    pixel = models.get(1)
    target = None if pixel is None else min(fd for _, fd in pixel["curve"])
    t_pixel = None if pixel is None else first_time_at_or_below(pixel["curve"], target)
    lines = [(f"MNIST at 32×32 ({results['n_train']} training images; 5000 held out). Every "
              "diffusion model trains "
             f"{results['minutes']:g} min of training-loop time on the machine above (batch 64, "
             f"AdamW 1e-3, EMA 0.999), unconditional. FD: {results['n']} DDIM-{results['steps']} "
             "samples against the training split in the features of the MNIST classifier "
             f"evaluator `{results['evaluator']}` (held-out accuracy "
             f"{results['evaluator_accuracy']:.4f}); the curve uses seed 0 at each kept "
             f"checkpoint, the last checkpoint {results['seeds']} seeds (mean ± sd)."),
             f"Real-vs-real baseline (held-out vs training, n = {results['n']}): FD "
             f"{results['baseline']:.2f}.", "",
             ("| model | UNet params | steps in budget | s/step | final FD | best FD (seed 0) | AE "
              "recon. FD | AE training | samples/s | reaches pixel's best FD after | speed-up |"),
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for f, r in models.items():
        t = None if target is None else first_time_at_or_below(r["curve"], target)
        first = r["curve"][0][0]
        reach = "never" if t is None else f"{'≤ ' if t == first and f != 1 else ''}{t / 60:.2f} min"
        bound = "≥ " if t == first and f != 1 else ""
        speed = "–" if t is None or t_pixel is None else f"{bound}{t_pixel / t:.1f}×"
        ae = ("–", "–") if f == 1 else (f"{r['recon_fd']:.2f}", f"{r['ae_minutes']:.1f} min")
        lines.append(f"| {name_of(f)} | {r['params'] / 1e6:.2f} M | {r['steps']} | "
                     f"{r['curve'][-1][0] / r['steps']:.3f} | {np.mean(r['final_fd']):.2f} ± "
                     f"{np.std(r['final_fd']):.2f} | {min(fd for _, fd in r['curve']):.2f} | "
                     f"{ae[0]} | {ae[1]} | {r['samples_per_s']:.1f} | {reach} | {speed} |")
    lines += ["",
              ("Speed-up: the time the pixel model took to reach its best FD, over the time the "
               "LDM took to reach "
              "that FD (\"≥\": already at the first kept checkpoint, so the true speed-up is "
              "larger). Training time excludes the one-off latent caching and the autoencoder, "
              "whose own training time is listed.")]
    return lines


if __name__ == "__main__":
    main()
