"""Which thread runs the model: why `latentdiff serve` runs every model call on one thread of its own.

A web server runs each request's function on a worker thread. The job is one image from the bundled
model (DDIM 50 steps, guidance 3) in a fresh process per setting: on the main thread; on a second
thread while the main thread has never run a torch operator; on a second thread after the main
thread has (as a server that loads its model on the main thread and samples on workers). With
OpenMP (libgomp), every thread that runs a parallel operator gets a team of its own. Settings are
interleaved over --reps rounds; medians are reported.

    python benchmarks/bench_model_thread.py [--reps 3] [--report]
"""

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "experiments"))

JOB = """
import json, threading, time, torch
from latentdiff.checkpoints import load_latent_diffusion
from latentdiff.checkpoints.models import bundled_model
from latentdiff.pipelines import generate

def job(out):
    model = load_latent_diffusion(bundled_model())
    generate(model, [0], prompts=["red heart"], guidance_scale=3.0, steps=50)  # warm
    times = []
    for seed in range(3):
        start = time.perf_counter()
        generate(model, [seed], prompts=["red heart"], guidance_scale=3.0, steps=50)
        times.append(time.perf_counter() - start)
    out.extend(times)

setting, out = {setting!r}, []
if setting == "main thread":
    job(out)
else:
    if setting == "second thread, main thread used torch":
        torch.randn(256, 256) @ torch.randn(256, 256)  # the main thread's OpenMP team exists
    worker = threading.Thread(target=job, args=(out,))
    worker.start()
    worker.join()
print(json.dumps({{"seconds": out, "threads": torch.get_num_threads()}}))
"""
SETTINGS = ("main thread", "second thread only", "second thread, main thread used torch")


def run_job(setting: str) -> dict:
    done = subprocess.run([sys.executable, "-c", JOB.format(setting=setting)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--report", action="store_true", help="write reports/model-thread")
    args = p.parse_args()
    from report import Provenance, write_report

    provenance = Provenance()
    seconds: dict[str, list[float]] = {s: [] for s in SETTINGS}
    threads = {}
    for _ in range(args.reps):
        for setting in SETTINGS:
            result = run_job(setting)
            seconds[setting] += result["seconds"]
            threads[setting] = result["threads"]
            print(setting, [round(x, 3) for x in result["seconds"]], flush=True)
    results = {"reps": args.reps, "seconds": seconds, "threads": threads,
               "median_s": {s: statistics.median(v) for s, v in seconds.items()}}
    print(json.dumps(results["median_s"], indent=1))
    if args.report:
        print(write_report("model-thread", "Which thread runs the model", results, render,
                           provenance))


def render(results: dict) -> list[str]:
    main_thread = results["median_s"]["main thread"]
    lines = ["One image from the bundled model (DDIM 50, guidance 3), timed 3 times after a warm-up "
             f"in a fresh process per setting; {results['reps']} interleaved rounds, the median of "
             "all timings (every timing in results.json).", "",
             "| where the model runs | median per image | against the main thread |",
             "|---|---|---|"]
    for setting, median in results["median_s"].items():
        lines.append(f"| {setting} | {median:.2f} s | {median / main_thread:.2f}× |")
    return lines


if __name__ == "__main__":
    main()
