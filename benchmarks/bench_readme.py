"""How long the README's main job takes: `make emoji`'s `latentdiff sample` (six prompts × 8 images,
guidance 3, DDIM 50) on the bundled model, or on other checkpoints given for comparison.

Each round runs the command line in a fresh process (as a user does) and records its wall time,
start-up, imports and model loading included; the rounds alternate over the checkpoints. Medians
(and every time) are reported. The issue's budget is 30 s on a 2-core CPU.

    python benchmarks/bench_readme.py [CHECKPOINT ...] [--reps 3] [--report]
"""

import argparse
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))


def readme_prompts() -> list[str]:
    """The prompts of the Makefile's PROMPTS (the README's `make emoji`)."""
    text = (ROOT / "Makefile").read_text()
    block = re.search(r"^PROMPTS := (.*?)(?<!\\)\n", text, re.S | re.M)
    if block is None:
        raise SystemExit("no PROMPTS in the Makefile")
    return shlex.split(block.group(1).replace("\\\n", " "))[1::2]  # --prompt TEXT pairs


def run_job(checkpoint: str | None, prompts: list[str], out: Path) -> float:
    flags = [arg for prompt in prompts for arg in ("--prompt", prompt)]
    command = [sys.executable, "-m", "latentdiff", "sample", *([checkpoint] if checkpoint else []),
               *flags, "--n", "8", "--guidance", "3", "--out", str(out)]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="*", help="default: the bundled model")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--report", action="store_true", help="write reports/readme-job/")
    args = parser.parse_args()
    from report import Provenance, shown_path, write_report

    provenance = Provenance()
    prompts = readme_prompts()
    names = {c: shown_path(Path(c)) for c in args.checkpoints} or {None: "bundled model"}
    times = {name: [] for name in names.values()}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.reps):
            for checkpoint, name in names.items():
                times[name].append(run_job(checkpoint, prompts, Path(tmp) / "emoji.png"))
                print(f"round {r}, {name}: {times[name][-1]:.1f} s", flush=True)
    results = {"reps": args.reps, "cpus": os.cpu_count(), "prompts": prompts,
               "median_seconds": {n: statistics.median(t) for n, t in times.items()},
               "all_seconds": times}
    print(results["median_seconds"])
    if args.report:
        print(write_report("readme-job", "The README's sampling job, end to end", results, render,
                           provenance))


def render(results: dict) -> list[str]:
    lines = [(f"`latentdiff sample` with the README's {len(results['prompts'])} prompts × 8 images "
              f"(guidance 3, DDIM 50: `make emoji`), each round a fresh process on a "
              f"{results['cpus']}-CPU machine, start-up and model loading included; median of "
              f"{results['reps']} rounds, alternating over the checkpoints (every time in "
              "results.json). Prompts: " + ", ".join(f'"{p}"' for p in results["prompts"]) + "."),
             "", "| checkpoint | median wall time | all rounds |", "|---|---|---|"]
    for name, median in results["median_seconds"].items():
        rounds = ", ".join(f"{t:.1f}" for t in results["all_seconds"][name])
        lines.append(f"| {name} | {median:.1f} s | {rounds} s |")
    return lines


if __name__ == "__main__":
    main()
