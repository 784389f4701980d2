"""CPU threads under a controlled background load: why a busy neighbour slows sampling by 20× and
which defaults degrade gracefully.

The job is the README's `latentdiff sample --prompt "red heart"` on the bundled model (8 images,
DDIM 50 steps, guidance 3), run in a fresh process per setting (OpenMP reads its environment at
start): torch threads 1 / 2 / latentdiff's default, OpenMP's waiting as shipped (libgomp spins
300,000 times at a barrier before it sleeps), OMP_WAIT_POLICY=PASSIVE (no spinning) or
GOMP_SPINCOUNT=10000, each with the machine idle, beside one busy process (a pure-Python loop) and
beside a torch process on its default threads. Settings are interleaved over --reps rounds;
medians are reported.

    python benchmarks/bench_threads.py [--reps 3] [--report]
"""

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "experiments"))

JOB = """
import json, time, torch
from latentdiff.checkpoints import load_latent_diffusion
from latentdiff.checkpoints.models import bundled_model
from latentdiff.pipelines import generate
{threads}
model = load_latent_diffusion(bundled_model())
start = time.perf_counter()
with torch.no_grad():
    generate(model, seeds=list(range(8)), prompts=["red heart"] * 8, steps=50, guidance_scale=3.0)
print(json.dumps({{"seconds": time.perf_counter() - start, "threads": torch.get_num_threads()}}))
"""
SETTINGS = {  # name → (torch threads: None = latentdiff's default, OpenMP environment)
    "1 thread": (1, {}),
    "2 threads": (2, {}),
    "2 threads, passive": (2, {"OMP_WAIT_POLICY": "PASSIVE"}),
    "2 threads, spin 10k": (2, {"GOMP_SPINCOUNT": "10000"}),
    "latentdiff default": (None, {}),
}
OPENMP = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def busy() -> None:
    """A neighbour that keeps one CPU busy: a pure-Python loop."""
    while True:
        pass


def torch_neighbour() -> None:
    """A neighbour like a second latentdiff job: UNet-sized matrix products on torch's default
    threads, as shipped."""
    import torch

    a = torch.randn(512, 512)
    while True:
        a = torch.tanh(a @ a)


LOADS = {"idle": None, "1 busy process": busy, "a torch process": torch_neighbour}


def run_job(threads: int | None, openmp: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in OPENMP}
    env.update(openmp)
    setup = (f"torch.set_num_threads({threads})" if threads
             else "from latentdiff.threads import configure_threads; configure_threads()")
    done = subprocess.run([sys.executable, "-c", JOB.format(threads=setup)], env=env,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--report", action="store_true", help="write reports/threads/")
    args = parser.parse_args()
    from report import Provenance, write_report

    provenance = Provenance()
    times = {(load, s): [] for load in LOADS for s in SETTINGS}
    used = {}
    for r in range(args.reps):
        for load, target in LOADS.items():
            neighbour = None
            if target is not None:
                neighbour = multiprocessing.Process(target=target, daemon=True)
                neighbour.start()
                time.sleep(2.0)
            try:
                for name, (threads, openmp) in SETTINGS.items():
                    out = run_job(threads, openmp)
                    times[load, name].append(out["seconds"])
                    used[f"{load} | {name}"] = out["threads"]
                    print(f"round {r}, {load:<15} {name:<20} {out['seconds']:7.2f} s", flush=True)
            finally:
                if neighbour is not None:
                    neighbour.terminate()
                    neighbour.join()
    results = {"reps": args.reps, "cpus": os.cpu_count(), "threads_used": used,
               "seconds": {load: {s: statistics.median(times[load, s]) for s in SETTINGS}
                           for load in LOADS},
               "all_seconds": {f"{load} | {s}": v for (load, s), v in times.items()}}
    print(json.dumps(results["seconds"], indent=1))
    if args.report:
        print(write_report("threads", "CPU threads under a busy neighbour", results, render,
                           provenance))


def render(results: dict) -> list[str]:
    idle = results["seconds"]["idle"]
    loads = list(results["seconds"])
    lines = [(f"`latentdiff sample --prompt \"red heart\"` on the bundled model (8 images, DDIM 50, "
              f"guidance 3) in a fresh process per setting on a {results['cpus']}-CPU machine: "
              "idle, beside one busy process (a pure-Python loop), or beside a torch process "
              "(512² matrix products on torch's default threads and OpenMP settings); median of "
              f"{results['reps']} interleaved rounds (all times in results.json)."), "",
             "Each cell: median time (slow-down against the same setting idle), and the torch "
             "threads the job ran with in the last round.", "",
             "| setting | " + " | ".join(loads) + " |", "|---|" + "---|" * len(loads)]
    for name in idle:
        cells = [f"{results['seconds'][load][name]:.1f} s"
                 + ("" if load == "idle" else f" ({results['seconds'][load][name] / idle[name]:.1f}×)")
                 + f", {results['threads_used'][f'{load} | {name}']} thr." for load in loads]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


if __name__ == "__main__":
    main()
