"""latentdiff vs diffusers (PyPI) at identical configurations, in one process: forward and
training-step time.

Each pair is built at the same architecture (parameter counts must agree within 1 %), measured in
interleaved A/B repetitions after warm-up, and reported as medians and the ratio ours/theirs (< 1:
latentdiff is faster). The machines here are shared and noisy: read the ratios, not the absolute
times.

Each setting runs on both sides: eager fp32, bf16 autocast (not on a CPU unless --modes asks),
channels_last.

    python benchmarks/bench_vs_diffusers.py [--reps 9] [--device cpu|cuda] [--report]

--report writes reports/vs-diffusers/ (results.json with the provenance, README.md).
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL as DiffusersAutoencoderKL
from diffusers import UNet2DModel

from latentdiff.autoencoder import AutoencoderKL
from latentdiff.config import AutoencoderConfig, UNetConfig
from latentdiff.unet import UNetModel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "experiments"))


def unet_pair(model_channels, channel_mult, num_res_blocks, attention, num_classes=None):
    ours = UNetModel(UNetConfig(in_channels=4, out_channels=4, model_channels=model_channels,
                                channel_mult=channel_mult,
                                num_res_blocks=num_res_blocks,
                                attention_resolutions=attention, head_channels=32,
                                num_classes=num_classes))
    down = tuple("AttnDownBlock2D" if 2 ** i in attention else "DownBlock2D"
                 for i in range(len(channel_mult)))
    theirs = UNet2DModel(in_channels=4, out_channels=4,
                         block_out_channels=tuple(model_channels * m for m in channel_mult),
                         layers_per_block=num_res_blocks, down_block_types=down,
                         up_block_types=tuple(b.replace("Down", "Up") for b in reversed(down)),
                         attention_head_dim=32, norm_num_groups=32, num_class_embeds=num_classes)
    return ours, theirs


def autoencoder_pair(in_channels, base_channels, channel_mult, num_res_blocks, latent_channels):
    ours = AutoencoderKL(AutoencoderConfig(in_channels=in_channels, base_channels=base_channels,
                                           channel_mult=channel_mult, num_res_blocks=num_res_blocks,
                                           latent_channels=latent_channels))
    n = len(channel_mult)
    theirs = DiffusersAutoencoderKL(in_channels=in_channels, out_channels=in_channels,
                                    latent_channels=latent_channels,
                                    block_out_channels=tuple(base_channels * m for m in channel_mult),
                                    down_block_types=("DownEncoderBlock2D",) * n,
                                    up_block_types=("UpDecoderBlock2D",) * n,
                                    layers_per_block=num_res_blocks, norm_num_groups=32)
    return ours, theirs


def unet_calls(model, ours: bool, x, t, y, bf16: bool = False):
    def run():
        with torch.autocast(x.device.type, torch.bfloat16, enabled=bf16):
            return model(x, t, class_labels=y) if ours else model(x, t, class_labels=y).sample

    return calls(model, run, x)


def autoencoder_calls(model, ours: bool, x, bf16: bool = False):
    def run():  # encode, a posterior sample, decode; the KL term of the training loss
        with torch.autocast(x.device.type, torch.bfloat16, enabled=bf16):
            if ours:
                posterior = model.encode(x)
                return (model.decode(posterior.sample(torch.randn_like(posterior.mean))),
                        posterior.kl())
            posterior = model.encode(x).latent_dist
            return model.decode(posterior.sample()).sample, posterior.kl()

    return calls(model, run, x, kl=True)


def calls(model, run, x, kl: bool = False):
    """(forward without gradients, AdamW training step) of `run`, with the MSE to x as the loss
    (L1 + 1e-6·KL for an autoencoder)."""
    def forward():
        with torch.no_grad():
            return run()

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train_step():
        if kl:
            recon, divergence = run()
            loss = (recon.float() - x).abs().mean() + 1e-6 * divergence.float().mean()
        else:
            loss = (run().float() - x).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return forward, train_step


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def interleaved_medians(a, b, reps: int, device) -> tuple[float, float]:
    for f in (a, b, a, b):  # warm-up
        f()
    times = {a: [], b: []}
    for r in range(reps):
        for f in ((a, b) if r % 2 == 0 else (b, a)):
            sync(device)
            start = time.perf_counter()
            f()
            sync(device)
            times[f].append(time.perf_counter() - start)
    return statistics.median(times[a]), statistics.median(times[b])


def count(model) -> int:
    return sum(p.numel() for p in model.parameters())


CASES = {
    "UNet LDM-like (64,128,256)×2, attn 64/128+mid, 4×16×16, b16": (
        lambda: unet_pair(64, (1, 2, 4), 2, (1, 2)),
        lambda: (torch.randn(16, 4, 16, 16), torch.randint(0, 1000, (16,)), None)),
    "UNet digits demo (64,128,128)×1, attn 4×4/2×2, classes, 4×8×8, b64": (
        lambda: unet_pair(64, (1, 2, 2), 1, (2, 4), num_classes=10),
        lambda: (torch.randn(64, 4, 8, 8), torch.randint(0, 1000, (64,)),
                 torch.randint(0, 10, (64,)))),
    "AE KL LDM-like (64,128,256)×2, f4, 3×64×64, b8": (
        lambda: autoencoder_pair(3, 64, (1, 2, 4), 2, 4),
        lambda: (torch.rand(8, 3, 64, 64) * 2 - 1,)),
    "AE KL digits demo (32,32,64)×1, f4, 1×32×32, b32": (
        lambda: autoencoder_pair(1, 32, (1, 1, 2), 1, 3),
        lambda: (torch.rand(32, 1, 32, 32) * 2 - 1,)),
}
# the same setting on both sides; channels_last last (it converts the models in place)
MODES = ("eager fp32", "bf16 autocast", "channels_last")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--report", action="store_true", help="write reports/vs-diffusers/")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=None,
                        help="default: all on GPUs; on a CPU without bf16 (bf16 ran 10–20× slower "
                             "than fp32 on both sides on the 2-core EPYC)")
    args = parser.parse_args()
    modes = args.modes or [m for m in MODES if args.device != "cpu" or m != "bf16 autocast"]
    from report import Provenance, write_report

    provenance = Provenance()
    device = torch.device(args.device)
    results = {"device": str(device), "reps": args.reps, "modes": modes, "cases": {}}
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{args.reps} interleaved reps")
    for name, (make_pair, make_inputs) in CASES.items():
        torch.manual_seed(0)
        ours, theirs = make_pair()
        p_ours, p_theirs = count(ours), count(theirs)
        assert abs(p_ours - p_theirs) <= 0.01 * p_theirs, (name, p_ours, p_theirs)
        inputs = [v.to(device) if v is not None else None for v in make_inputs()]
        ours.to(device).train()
        theirs.to(device).train()
        make_calls = unet_calls if name.startswith("UNet") else autoencoder_calls
        rows = results["cases"][name] = {"params": [p_ours, p_theirs], "ms": {}}
        for mode in modes:
            if mode == "channels_last":
                for model in (ours, theirs):
                    model.to(memory_format=torch.channels_last)
                inputs[0] = inputs[0].contiguous(memory_format=torch.channels_last)
            bf16 = mode == "bf16 autocast"
            ours_fwd, ours_step = make_calls(ours, True, *inputs, bf16=bf16)
            theirs_fwd, theirs_step = make_calls(theirs, False, *inputs, bf16=bf16)
            for what, a, b in (("forward", ours_fwd, theirs_fwd),
                               ("train step", ours_step, theirs_step)):
                t_ours, t_theirs = interleaved_medians(a, b, args.reps, device)
                rows["ms"][f"{mode}|{what}"] = [1e3 * t_ours, 1e3 * t_theirs]
                print(f"{name:<68} {mode:>14} {what:>10} {1e3 * t_ours:9.1f} ms "
                      f"{1e3 * t_theirs:9.1f} ms {t_ours / t_theirs:6.2f}", flush=True)
    if args.report:
        print(write_report("vs-diffusers", "latentdiff against diffusers at identical architectures",
                           results, render, provenance))


def render(results: dict) -> list[str]:
    lines = [f"Device {results['device']}; median of {results['reps']} interleaved repetitions "
             "after warm-up, both models in one process; each setting applied to both sides. "
             "Ratio = latentdiff's time over diffusers' (< 1: latentdiff faster). Training step: "
             "AdamW (torch's default implementation on both sides), MSE to the input (autoencoders: "
             "L1 + 1e-6·KL of a posterior sample).", "",
             "| configuration | params ours / diffusers | setting | forward ms (ours / theirs) | "
             "ratio | train step ms (ours / theirs) | ratio |", "|---|---|---|---|---|---|---|"]
    for name, case in results["cases"].items():
        for mode in results["modes"]:
            cells = []
            for what in ("forward", "train step"):
                ours, theirs = case["ms"][f"{mode}|{what}"]
                cells += [f"{ours:.1f} / {theirs:.1f}", f"{ours / theirs:.2f}"]
            lines.append(f"| {name} | {case['params'][0]:,} / {case['params'][1]:,} | {mode} | "
                         + " | ".join(cells) + " |")
    return lines


if __name__ == "__main__":
    main()
