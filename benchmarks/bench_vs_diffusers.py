"""latentdiff vs diffusers (PyPI) at identical configurations, in one process: forward and
training-step time.

Each pair is built at the same architecture (parameter counts must agree within 1 %), measured in
interleaved A/B repetitions after warm-up, and reported as medians and the ratio ours/theirs (< 1:
latentdiff is faster). The machines here are shared and noisy: read the ratios, not the absolute
times.

    python benchmarks/bench_vs_diffusers.py [--reps 9] [--device cpu|cuda]
"""

import argparse
import statistics
import time

import torch
from diffusers import AutoencoderKL as DiffusersAutoencoderKL
from diffusers import UNet2DModel

from latentdiff.autoencoder import AutoencoderKL
from latentdiff.config import AutoencoderConfig, UNetConfig
from latentdiff.unet import UNetModel


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


def unet_calls(model, ours: bool, x, t, y):
    def forward():
        with torch.no_grad():
            return model(x, t, class_labels=y) if ours else model(x, t, class_labels=y).sample

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train_step():
        out = model(x, t, class_labels=y) if ours else model(x, t, class_labels=y).sample
        loss = (out - x).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return forward, train_step


def autoencoder_calls(model, ours: bool, x):
    def forward():  # encode (posterior mean) + decode
        with torch.no_grad():
            if ours:
                return model.decode(model.encode(x).mean)
            return model.decode(model.encode(x).latent_dist.mean).sample

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train_step():  # L1 + 1e-6·KL on a posterior sample
        if ours:
            posterior = model.encode(x)
            recon, kl = model.decode(posterior.sample(torch.randn_like(posterior.mean))), posterior.kl()
        else:
            posterior = model.encode(x).latent_dist
            recon, kl = model.decode(posterior.sample()).sample, posterior.kl()
        loss = (recon - x).abs().mean() + 1e-6 * kl.mean()
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    cases = [
        ("UNet LDM-like (64,128,256)×2, attn 64/128+mid, 4×16×16, b16",
         unet_pair(64, (1, 2, 4), 2, (1, 2)),
         lambda: (torch.randn(16, 4, 16, 16), torch.randint(0, 1000, (16,)), None)),
        ("UNet digits demo (64,128,128)×1, attn 4×4/2×2, classes, 4×8×8, b64",
         unet_pair(64, (1, 2, 2), 1, (2, 4), num_classes=10),
         lambda: (torch.randn(64, 4, 8, 8), torch.randint(0, 1000, (64,)),
                  torch.randint(0, 10, (64,)))),
        ("AE KL LDM-like (64,128,256)×2, f4, 3×64×64, b8", autoencoder_pair(3, 64, (1, 2, 4), 2, 4),
         lambda: (torch.rand(8, 3, 64, 64) * 2 - 1,)),
        ("AE KL digits demo (32,32,64)×1, f4, 1×32×32, b32",
         autoencoder_pair(1, 32, (1, 1, 2), 1, 3),
         lambda: (torch.rand(32, 1, 32, 32) * 2 - 1,)),
    ]
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{args.reps} interleaved reps")
    print(f"{'configuration':<68} {'params ours/theirs':>22} {'what':>10} {'ours ms':>9} "
          f"{'theirs ms':>10} {'ratio':>6}")
    for name, (ours, theirs), make_inputs in cases:
        p_ours, p_theirs = count(ours), count(theirs)
        assert abs(p_ours - p_theirs) <= 0.01 * p_theirs, (name, p_ours, p_theirs)
        inputs = [v.to(device) if v is not None else None for v in make_inputs()]
        ours.to(device).train()
        theirs.to(device).train()
        calls = unet_calls if "UNet" in name else autoencoder_calls
        ours_fwd, ours_step = calls(ours, True, *inputs)
        theirs_fwd, theirs_step = calls(theirs, False, *inputs)
        for what, a, b in (("forward", ours_fwd, theirs_fwd),
                           ("train step", ours_step, theirs_step)):
            t_ours, t_theirs = interleaved_medians(a, b, args.reps, device)
            print(f"{name:<68} {p_ours:>10,}/{p_theirs:<11,} {what:>10} {1e3 * t_ours:9.1f} "
                  f"{1e3 * t_theirs:10.1f} {t_ours / t_theirs:6.2f}")


if __name__ == "__main__":
    main()
