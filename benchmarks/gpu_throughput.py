"""Training throughput on a GPU: the Stable Diffusion v1-sized UNet (859 M parameters, 4×64×64
latents, 77×768 context) and the KL-f8 autoencoder (256×256 images), latentdiff against diffusers'
UNet2DConditionModel / AutoencoderKL at the same configuration, in one process.

A training step is the forward pass under bf16 autocast (weights, gradients and AdamW in fp32, as
Fabric's bf16-mixed), an MSE (UNet) or L1 + KL (autoencoder) loss, the backward pass and a fused AdamW
step; attention is PyTorch's scaled_dot_product_attention on both sides. Steps are timed in
interleaved rounds (ours and theirs alternating) after warm-up, eager and with torch.compile.
Reported: median step time, images/s, the FLOPs of one step (counted by torch's FlopCounterMode on
the forward and backward pass, the optimiser excluded) and model FLOPs utilisation, MFU = step FLOPs
/ step time / the GPU's dense bf16 peak (a table of known GPUs, or --peak-tflops).

    python benchmarks/gpu_throughput.py [--batch 32] [--reps 10] [--report]
    python benchmarks/gpu_throughput.py --tiny --device cpu      # a smoke run of the script

--report writes reports/gpu-throughput/ (results.json with the provenance, README.md);
docs/performance.md quotes it.
"""

import argparse
import sys
from pathlib import Path

import torch
from bench_training import measure
from torch.utils.flop_counter import FlopCounterMode

from latentdiff.autoencoder import AutoencoderKL
from latentdiff.checkpoints.interop.compvis import original_config, read_yaml
from latentdiff.checkpoints.interop.diffusers_configs import unet_to_diffusers
from latentdiff.config import AutoencoderConfig, UNetConfig
from latentdiff.unet import UNetModel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "experiments"))

SD_V1 = Path(__file__).resolve().parent.parent / "src/latentdiff/configs/original/sd-v1-inference.yaml"
# dense bf16 tensor-core peaks (vendor data sheets, TFLOP/s, without sparsity)
PEAK_TFLOPS = {"H200": 989.4, "H100 SXM": 989.4, "H100 80GB HBM3": 989.4, "H100 PCIe": 756.0,
               "H100 NVL": 835.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 70.0,
               "RTX 4090": 165.2, "RTX 6000 Ada": 364.2}
TITLE = "GPU training throughput: SD-v1-sized UNet and KL-f8 autoencoder, latentdiff vs diffusers"


def sd_configs(tiny: bool) -> tuple[UNetConfig, AutoencoderConfig]:
    """Stable Diffusion v1's UNet and first stage, from its original config (or tiny versions)."""
    original = original_config(read_yaml(SD_V1))
    if not tiny:
        return original.unet, original.autoencoder
    unet = UNetConfig(in_channels=4, out_channels=4, model_channels=32, channel_mult=(1, 2),
                      num_res_blocks=1, attention_resolutions=(1, 2), num_heads=2, head_channels=-1,
                      context_dim=32,
                      linear_projection=original.unet.linear_projection)
    return unet, AutoencoderConfig(base_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                                   latent_channels=4)


def unet_pair(cfg: UNetConfig):
    from diffusers import UNet2DConditionModel

    config = {k: v for k, v in unet_to_diffusers(cfg, 64).items() if not k.startswith("_")}
    return UNetModel(cfg), UNet2DConditionModel(**config)


def autoencoder_pair(cfg: AutoencoderConfig):
    from diffusers import AutoencoderKL as TheirAutoencoderKL

    n = len(cfg.channel_mult)
    theirs = TheirAutoencoderKL(in_channels=cfg.in_channels, out_channels=cfg.in_channels,
                                latent_channels=cfg.latent_channels,
                                block_out_channels=tuple(cfg.base_channels * m for m in cfg.channel_mult),
                                down_block_types=("DownEncoderBlock2D",) * n,
                                up_block_types=("UpDecoderBlock2D",) * n,
                                layers_per_block=cfg.num_res_blocks, norm_num_groups=32)
    return AutoencoderKL(cfg), theirs


def unet_loss(model, ours: bool, x, t, context):
    out = model(x, t, context=context) if ours else model(x, t, encoder_hidden_states=context).sample
    return (out.float() - x.float()).pow(2).mean()


def autoencoder_loss(model, ours: bool, x):
    if ours:
        posterior = model.encode(x)
        recon = model.decode(posterior.sample(torch.randn_like(posterior.mean)))
    else:
        posterior = model.encode(x).latent_dist
        recon = model.decode(posterior.sample()).sample
    return (recon.float() - x.float()).abs().mean() + 1e-6 * posterior.kl().mean()


def training_step(model, loss, inputs: tuple, bf16: bool, compile_: bool, device: torch.device):
    """A closure doing one training step (forward, loss, backward, fused AdamW) of `model`."""
    model = model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cuda" or None)
    forward = torch.compile(model) if compile_ else model

    def step():
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            value = loss(forward, *inputs)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
    return step


def step_flops(model, loss, inputs: tuple, bf16: bool, device: torch.device) -> int:
    """FLOPs of one forward + backward pass (FlopCounterMode: matmuls and convolutions)."""
    model = model.to(device)
    with FlopCounterMode(display=False) as counter:
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            value = loss(model, *inputs)
        value.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def peak_tflops(device: torch.device, given: float | None) -> tuple[str, float | None]:
    if device.type != "cuda":
        return "cpu", given
    name = torch.cuda.get_device_name(device)
    known = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    return name, given or known


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=32, help="UNet batch (latents 4×64×64)")
    p.add_argument("--ae-batch", type=int, default=8, help="autoencoder batch (256×256 images)")
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--no-compile", action="store_true", help="eager only")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="the GPU's dense bf16 peak (default: from the table of known GPUs)")
    p.add_argument("--tiny", action="store_true", help="tiny models, batch 2: a smoke run")
    p.add_argument("--report", action="store_true", help="write reports/gpu-throughput/")
    args = p.parse_args()
    from report import Provenance, write_report

    provenance = Provenance()
    device = torch.device(args.device)
    bf16 = device.type == "cuda"
    gpu, peak = peak_tflops(device, args.peak_tflops)
    unet_cfg, ae_cfg = sd_configs(args.tiny)
    batch, ae_batch = (2, 2) if args.tiny else (args.batch, args.ae_batch)
    side, context = (8, (8, 32)) if args.tiny else (64, (77, 768))
    image = 32 if args.tiny else 256
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 4, side, side, generator=generator).to(device)
    t = torch.randint(0, 1000, (batch,), generator=generator).to(device)
    c = torch.randn(batch, *context, generator=generator).to(device)
    pixels = torch.rand(ae_batch, 3, image, image, generator=generator).to(device) * 2 - 1
    cases = [("UNet", unet_pair(unet_cfg), unet_loss, (x, t, c), batch),
             ("KL-f8 autoencoder", autoencoder_pair(ae_cfg), autoencoder_loss, (pixels,), ae_batch)]
    modes = ["eager"] + ([] if args.no_compile else ["compile"])
    rows = []
    for name, (ours, theirs), loss, inputs, n in cases:
        counts = [sum(p.numel() for p in m.parameters()) for m in (ours, theirs)]
        if abs(counts[0] - counts[1]) > 0.01 * counts[1]:
            raise SystemExit(f"{name}: {counts[0]:,} parameters against diffusers' {counts[1]:,}")
        flops = {side_: step_flops(m, lambda f, *a, o=side_ == "latentdiff": loss(f, o, *a),
                                   inputs, bf16, device)
                 for side_, m in (("latentdiff", ours), ("diffusers", theirs))}
        for mode in modes:
            steps = {side_: training_step(m, lambda f, *a, o=side_ == "latentdiff": loss(f, o, *a),
                                          inputs, bf16, mode == "compile", device)
                     for side_, m in (("latentdiff", ours), ("diffusers", theirs))}
            seconds = measure(steps, args.reps, device)
            for side_, s in seconds.items():
                achieved = flops[side_] / s / 1e12
                rows.append({"model": name, "parameters": counts[0 if side_ == "latentdiff" else 1],
                             "implementation": side_, "mode": mode, "batch": n,
                             "step_ms": round(1000 * s, 2), "images_per_s": round(n / s, 2),
                             "step_tflop": round(flops[side_] / 1e12, 3),
                             "achieved_tflops": round(achieved, 2),
                             "mfu": None if peak is None else round(achieved / peak, 4)})
                print(rows[-1], flush=True)
            del steps
            if device.type == "cuda":
                torch.cuda.empty_cache()
    results = {"device": gpu, "peak_tflops": peak, "bf16": bf16, "tiny": args.tiny,
               "reps": args.reps, "torch": torch.__version__, "rows": rows}
    if args.report:
        print(write_report("gpu-throughput", TITLE, results, render, provenance))
    else:
        print("\n".join(render(results)))


def render(results: dict) -> list[str]:
    peak = results["peak_tflops"]
    lines = [f"Device: {results['device']}; bf16 autocast: {results['bf16']}; dense bf16 peak "
             f"assumed for MFU: {peak if peak else 'unknown'} TFLOP/s; torch {results['torch']}"
             f"{' (tiny smoke configuration)' if results['tiny'] else ''}. Median of "
             f"{results['reps']} interleaved steps after warm-up. Step FLOPs: FlopCounterMode's "
             "count of the forward and backward pass.", "",
             "| model | implementation | mode | batch | step (ms) | images/s | TFLOP per step | "
             "TFLOP/s | MFU | ratio ours/theirs |", "|---|---|---|---|---|---|---|---|---|---|"]
    by_key = {(r["model"], r["mode"], r["implementation"]): r for r in results["rows"]}
    for r in results["rows"]:
        theirs = by_key[(r["model"], r["mode"], "diffusers")]
        ratio = r["step_ms"] / theirs["step_ms"] if r["implementation"] == "latentdiff" else 1.0
        mfu = "–" if r["mfu"] is None else f"{100 * r['mfu']:.1f} %"
        lines.append(f"| {r['model']} ({r['parameters'] / 1e6:.0f} M) | {r['implementation']} | "
                     f"{r['mode']} | {r['batch']} | {r['step_ms']:.1f} | {r['images_per_s']:.1f} | "
                     f"{r['step_tflop']:.2f} | {r['achieved_tflops']:.1f} | {mfu} | {ratio:.3f} |")
    return lines


if __name__ == "__main__":
    main()
