"""Samplers on a trained model: Fréchet distance vs network evaluations, and the time a sampler adds
to the network.

1. FD vs NFE: class-conditional samples of a trained digits LDM (`latentdiff demo` writes one to
   runs/demo), one image per held-out digit, scored by the project's classifier evaluator
   (`evaluation/conditional.py`) beside the real-vs-real baseline at the same n, for NFE budgets 5 …
   250 and every deterministic sampler plus two stochastic ones; steps = NFE / NFE-per-step.
2. Overhead: everything but the network, as a share of sampling time, at 20 steps on the same model
   (or, with --skip-fd, on any model: e.g. the bundled emoji text model, with the empty prompt's
   context) — for each pair of samplers/diffusers_peers.py (a latentdiff sampler and the diffusers
   scheduler settings that follow the same trajectory), in the same process, driven with the same
   network, timed over the same phases (grid set-up, initial noise, the loop); median of repetitions
   that alternate which side runs first; the ratio ours/theirs is what to read on a shared machine.

    python benchmarks/bench_samplers.py [--checkpoint runs/demo/ldm/checkpoints/last.safetensors] [--seeds 1]
"""

import argparse
import statistics
import time

import torch

from latentdiff.checkpoints import load_latent_diffusion
from latentdiff.conditioning import Cond
from latentdiff.config import DataConfig
from latentdiff.denoiser import Denoiser
from latentdiff.samplers.diffusers_peers import PEERS, PeerScheduler
from latentdiff.evaluation.conditional import evaluate_class_conditional
from latentdiff.samplers import run_sampler, sigma_grid

NFES = (5, 10, 20, 50, 100, 250)
FD_SAMPLERS = ("ddim", "euler", "heun", "plms", "lms", "dpmpp_2m", "dpmpp_3m", "dpmpp_2s",
               "unipc", "euler_ancestral",
               "dpmpp_2m_sde")
TWO_NFE = ("heun", "dpmpp_2s")  # 2 NFE per step, 1 on the last: NFE = 2·steps − 1


def steps_for(name: str, nfe: int) -> int:
    if name in TWO_NFE:
        return max(1, (nfe + 1) // 2)
    # PLMS: one extra evaluation on its first step
    return max(1, nfe - 1) if name == "plms" else nfe


def fd_vs_nfe(model, data_cfg: DataConfig, seeds: tuple[int, ...]) -> None:
    print("\n## Fréchet distance (classifier features) vs network evaluations\n")
    print("| sampler | " + " | ".join(f"NFE {n}" for n in NFES) + " |")
    print("|---|" + "---|" * len(NFES))
    baseline = None
    for name in FD_SAMPLERS:
        cells = []
        for nfe in NFES:
            report = evaluate_class_conditional(model, data_cfg, seeds, sampler=name,
                                                steps=steps_for(name, nfe))
            baseline = report.fd_baseline
            cells.append(f"{statistics.mean(report.fd):.3f}")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    print(f"\nreal-vs-real baseline (held-out vs training, same n): {baseline:.3f}")


class TimedNetwork:
    """Wraps the UNet net(z_t, t, **cond) and accumulates the time spent inside it
    (synchronising on CUDA)."""

    def __init__(self, net):
        self.net, self.seconds = net, 0.0

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        out = self.net(*args, **kwargs)
        if out.is_cuda:
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - start
        return out


def bench_condition(model, batch: int) -> Cond:
    """Class labels 0, 1, … for a class-conditional model; the empty prompt's context for a text
    model."""
    if model.num_classes:
        return Cond(class_labels=torch.arange(batch, device=model.device) % model.num_classes)
    if model.conditioner is not None and model.conditioner.kind == "text":
        return model.conditioner.encode(model.conditioner.null_tokens(batch).to(model.device))
    return Cond()


def _start(model, batch: int) -> torch.Tensor:
    """The same standard-normal x_T draw on both sides (one generator: per-sample seeds cost more
    than the draw)."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch, *model.latent_shape, generator=generator).to(model.device)


def our_overhead(model, peer: PeerScheduler, steps: int, batch: int) -> float:
    """Share of the time outside the network, from the grid's set-up to the last step
    (as `their_overhead`)."""
    cond = bench_condition(model, batch)
    network = TimedNetwork(model.denoiser.net)
    denoiser = Denoiser(network, model.denoiser.precond)
    start = time.perf_counter()
    sigmas = sigma_grid(model.schedule, steps, peer.spacing, final=peer.final).to(model.device)
    x = _start(model, batch) * denoiser.prior_std(sigmas[0])
    run_sampler(peer.sampler, denoiser, x, sigmas, cond=cond,
                generator=torch.Generator().manual_seed(1),
                **peer.options)
    total = time.perf_counter() - start
    return (total - network.seconds) / total


def their_overhead(model, peer: PeerScheduler, steps: int, batch: int) -> float:
    """The diffusers scheduler with the settings that follow the same trajectory (`PEERS`), driven
    by the same network: set_timesteps, the initial noise, then scale_model_input / network / step
    per evaluation."""
    import diffusers

    schedule = model.schedule.config
    scheduler = getattr(diffusers, peer.scheduler)(
        num_train_timesteps=schedule.num_timesteps, beta_start=schedule.beta_start,
        beta_end=schedule.beta_end,
        beta_schedule=schedule.kind, prediction_type="epsilon", **peer.scheduler_options)
    kwargs = bench_condition(model, batch).network_kwargs()
    network = TimedNetwork(model.denoiser.net)
    generator = torch.Generator().manual_seed(1)
    start = time.perf_counter()
    scheduler.set_timesteps(steps)
    sample = _start(model, batch) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        eps = network(scheduler.scale_model_input(sample, t),
                      t.expand(batch).to(model.device), **kwargs)
        sample = scheduler.step(eps, t, sample, **_generator(scheduler, generator)).prev_sample
    total = time.perf_counter() - start
    return (total - network.seconds) / total


def _generator(scheduler, generator: torch.Generator) -> dict:
    return {"generator": generator} if "generator" in scheduler.step.__code__.co_varnames else {}


def overhead_table(model, steps: int, batch: int, reps: int) -> None:
    print(f"\n## Sampler overhead at {steps} steps, batch {batch}: share of sampling time outside "
          f"the network (median of {reps}; the two sides alternate which runs first)\n")
    print("| sampler (settings of samplers/diffusers_peers.py) | latentdiff | diffusers | ratio "
          "ours/theirs |")
    print("|---|---|---|---|")
    with torch.no_grad():
        our_overhead(model, PEERS["ddim"], steps, batch)  # warm-up, both sides
        their_overhead(model, PEERS["ddim"], steps, batch)
        for name, peer in PEERS.items():
            ours, theirs = [], []
            for rep in range(reps):
                pair = [(ours, our_overhead), (theirs, their_overhead)]
                for results, measure in pair if rep % 2 == 0 else pair[::-1]:
                    results.append(measure(model, peer, steps, batch))
            o, t = statistics.median(ours), statistics.median(theirs)
            print(f"| {name} | {o:.1%} | {t:.1%} | {o / t:.2f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="runs/demo/ldm/checkpoints/last.safetensors")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--skip-fd", action="store_true", help="only the overhead table")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    from latentdiff.evaluation.autoencoder import stored_data_config

    model = load_latent_diffusion(args.checkpoint, args.device)
    print(f"model: {args.checkpoint} "
          f"({sum(p.numel() for p in model.denoiser.net.parameters()) / 1e6:.2f} M UNet "
          f"parameters), device {args.device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    overhead_table(model, 20, args.batch, args.reps)
    if not args.skip_fd:
        if not model.num_classes:
            raise SystemExit("the FD table needs a class-conditional model (the digits LDM); "
                             "use --skip-fd")
        fd_vs_nfe(model, stored_data_config(args.checkpoint), tuple(range(args.seeds)))


if __name__ == "__main__":
    main()
