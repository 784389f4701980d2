"""Training-step and sampling throughput of each speed setting against eager fp32, in one process.

Each variant trains its own copy of the same UNet (same initial weights) with AdamW on the same
batch; steps are measured in interleaved rounds (every variant once per round, the order rotating)
after warm-up, and reported as median milliseconds and the ratio to eager (< 1: faster). Variants:
channels_last memory format, AdamW's fused kernel, bf16 autocast (the forward and backward in
bfloat16, weights and optimizer in fp32), torch.compile, all four together, and gradient
checkpointing (trades time for memory). Sampling: the README's job (the bundled model, 8 images,
DDIM 50, guidance 3) eager against torch.compile'd, alternating, after the one-off compilation
(whose time is reported apart).

    python benchmarks/bench_training.py [--reps 15] [--device cpu|cuda] [--report]

--report writes reports/throughput/ (results.json with the provenance, README.md).
"""

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from latentdiff.acceleration import compiled
from latentdiff.config import UNetConfig
from latentdiff.unet import UNetModel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "experiments"))

VARIANTS = ("eager", "channels_last", "fused AdamW", "bf16 autocast", "compile", "all four",
            "grad. checkpointing")
CASES = {
    # the ldm-tradeoff's LDM-4 (experiments/ldm_tradeoff.py, unet_config(4))
    "MNIST LDM-4 UNet, 3×8×8, b64": (
        UNetConfig(in_channels=3, out_channels=3, model_channels=32, channel_mult=(1, 2, 2),
                   num_res_blocks=1, attention_resolutions=(2, 4), head_channels=32),
        64, 8, None),
    # the 32-px bundled text-to-image model's UNet (configs/ldm-emoji-text.yaml before the 64-px model: 4 latent
    # channels; the 64-px one has 8, which changes only its first and last convolution), 24 context tokens
    "emoji text UNet, 4×8×8, b64, context 24×192": (
        UNetConfig(in_channels=4, out_channels=4, model_channels=64, channel_mult=(1, 2, 2),
                   num_res_blocks=1, attention_resolutions=(1, 2, 4), head_channels=32,
                   context_dim=192), 64, 8, (24, 192)),
}


def variant_step(name: str, base: UNetModel, x, t, context, device: torch.device):
    """A closure doing one training step of the `name` variant on its own copy of `base`."""
    model = copy.deepcopy(base).to(device)
    if name in ("channels_last", "all four"):
        model = model.to(memory_format=torch.channels_last)
    if name == "grad. checkpointing":
        model.gradient_checkpointing()
    fused = name in ("fused AdamW", "all four")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused or None)
    forward = compiled(model, name in ("compile", "all four"), device, "bench")
    bf16 = name in ("bf16 autocast", "all four")

    def step():
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            out = forward(x, t, context=context)
        loss = (out.float() - x).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(steps: dict, reps: int, device: torch.device) -> dict[str, float]:
    """Median seconds per step of each closure, interleaved; warm-up (compilation) first."""
    for step in steps.values():
        for _ in range(3):
            step()
    times = {name: [] for name in steps}
    names = list(steps)
    for r in range(reps):
        for name in names[r % len(names):] + names[:r % len(names)]:
            sync(device)
            start = time.perf_counter()
            steps[name]()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(v) for name, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--report", action="store_true", help="write reports/throughput/")
    args = parser.parse_args()
    from report import Provenance, write_report

    provenance = Provenance()
    device = torch.device(args.device)
    results = {"device": str(device), "reps": args.reps, "cases": {}}
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    for case, (cfg, batch, side, context_shape) in CASES.items():
        torch.manual_seed(0)
        base = UNetModel(cfg)
        x = torch.randn(batch, cfg.in_channels, side, side, device=device)
        t = torch.randint(0, 1000, (batch,), device=device)
        context = (None if context_shape is None
                   else torch.randn(batch, *context_shape, device=device))
        steps = {v: variant_step(v, base, x, t, context, device) for v in VARIANTS}
        medians = measure(steps, args.reps, device)
        results["cases"][case] = {"params": sum(p.numel() for p in base.parameters()),
                                  "ms": {v: 1e3 * s for v, s in medians.items()}}
        for v, s in medians.items():
            print(f"{case:<46} {v:<20} {1e3 * s:8.1f} ms  {s / medians['eager']:5.2f}× eager")
    results["sampling"] = sampling(device, max(3, args.reps // 3))
    print(json.dumps(results["sampling"]))
    if args.report:
        print(write_report("throughput", "Training and sampling throughput of the speed settings",
                           results, render, provenance))


def sampling(device: torch.device, reps: int) -> dict:
    """Seconds for the README's sample job: eager and compiled (median over `reps` alternating
    runs after the first compiled run, whose time is the compilation's)."""
    from latentdiff.checkpoints import load_latent_diffusion
    from latentdiff.checkpoints.models import bundled_model
    from latentdiff.pipelines import generate

    model = load_latent_diffusion(bundled_model(), device)
    eager = model.unet
    fast = compiled(eager, True, device, "bench")

    def job(unet) -> float:
        model.unet = unet
        sync(device)
        start = time.perf_counter()
        with torch.no_grad():
            generate(model, seeds=list(range(8)), prompts=["red heart"] * 8, steps=50,
                     guidance_scale=3.0)
        sync(device)
        return time.perf_counter() - start

    job(eager)
    first = job(fast)
    times = {"eager": [], "compiled": []}
    for _ in range(reps):
        times["eager"].append(job(eager))
        times["compiled"].append(job(fast))
    return {"first_compiled_s": first, "reps": reps,
            **{k: statistics.median(v) for k, v in times.items()}}


def render(results: dict) -> list[str]:
    lines = [(f"One training step (forward, backward, AdamW) on {results['device']}; median of "
              f"{results['reps']} interleaved rounds after 3 warm-up steps per variant; ratio to "
              "eager fp32 in the same process (< 1: faster)."), "",
             "| case | params | " + " | ".join(VARIANTS) + " |", "|---|---|" + "---|" * len(VARIANTS)]
    for case, r in results["cases"].items():
        eager = r["ms"]["eager"]
        lines.append(f"| {case} | {r['params'] / 1e6:.2f} M | " + " | ".join(
            f"{r['ms'][v]:.1f} ms ({r['ms'][v] / eager:.2f}×)" for v in VARIANTS) + " |")
    r = results["sampling"]
    lines += ["", (f"Sampling (the bundled model, 8 images, DDIM 50, guidance 3; median of {r['reps']} "
                   f"alternating runs): eager {r['eager']:.2f} s, compiled {r['compiled']:.2f} s "
                   f"({r['compiled'] / r['eager']:.2f}×) once compiled; the first compiled run took "
                   f"{r['first_compiled_s']:.1f} s (compilation), so `--compile` pays off only for "
                   "long sampling jobs.")]
    return lines


if __name__ == "__main__":
    main()
