"""Load test of `latentdiff serve`: 20 users at once through the queue, against the same 20 requests
sent one after another, on the bundled model and its 4-step student; throughput, latency and the
server's memory.

    python experiments/ui_load.py            # → reports/ui-load/
"""

import argparse
import functools
import tempfile
import time
from pathlib import Path

from report import Provenance, write_report

from latentdiff.checkpoints import load_latent_diffusion
from latentdiff.checkpoints.models import bundled_model
from latentdiff.ui.app import default_guidance
from latentdiff.ui.catalog import ModelEntry
from latentdiff.ui.jobs import Request, run
from latentdiff.ui.load import ServerProcess, run_load

TITLE = "Web UI under load: 20 concurrent text-to-image requests through the queue"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=20)
    p.add_argument("--repeats", type=int, default=2, help="rounds per case (the spread)")
    p.add_argument("--max-sessions", type=int, default=50,
                   help="the session cap of the memory probe's server")
    p.add_argument("--name", default="ui-load", help="report folder under reports/")
    args = p.parse_args()
    provenance = Provenance()
    teacher = bundled_model()
    student = teacher.with_name("emoji-text-lcm-lora.safetensors")
    cases = [("emoji-text", 4), ("emoji-text", 50), ("emoji-text-lcm-lora", 4)]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        server = ServerProcess(str(teacher), str(student), log=Path(folder) / "serve.log")
        try:
            run_load(server.url, users=1, steps=2)  # warm: both models loaded, first request done
            run_load(server.url, users=1, steps=2, model="emoji-text-lcm-lora")
            idle = server.rss_mib()
            for model, steps in cases:
                for repeat in range(args.repeats):
                    for mode in ("direct", "sequential", "concurrent"):
                        if mode == "direct":
                            result = _direct(model, steps, args.users, Path(folder) / "direct")
                        elif mode == "concurrent":
                            result = run_load(server.url, args.users, steps, model=model)
                        else:
                            parts = [run_load(server.url, 1, steps, model=model)
                                     for _ in range(args.users)]
                            result = _sequential(parts)
                        result.update(model=model, mode=mode, repeat=repeat,
                                      rss_mib=server.rss_mib())
                        print(result, flush=True)
                        rows.append(result)
            peak = max(r["rss_mib"] for r in rows)
        finally:
            server.stop()
        sessions = _session_memory(args.max_sessions, Path(folder) / "sessions.log")
    results = {"users": args.users, "repeats": args.repeats, "rss_idle_mib": idle,
               "rss_peak_mib": peak, "rows": rows, "sessions": sessions}
    print(write_report(args.name, TITLE, results, render, provenance))


def _direct(name: str, steps: int, n: int, out: Path) -> dict:
    """The same requests in this process, through the server's job function without the server:
    what the server's own overhead is measured against."""
    model, entry = _loaded(name)
    latencies = []
    for seed in range(n):
        start = time.perf_counter()
        run(model, entry, Request("txt2img", prompt="red heart", steps=steps, seed=seed,
                                  sampler=model.sampling_defaults["sampler"],
                                  guidance=default_guidance(model)), out)
        latencies.append(time.perf_counter() - start)
    wall = sum(latencies)
    return {"users": 1, "steps": steps, "completed": n, "failed": 0, "lost": 0, "errors": [],
            "wall_s": wall, "images_per_s": n / wall,
            "latency_s": {"min": min(latencies), "max": max(latencies), "mean": wall / n}}


@functools.cache
def _loaded(name: str):
    path = bundled_model().with_name(f"{name}.safetensors")
    return load_latent_diffusion(path), ModelEntry(name, path)


def _session_memory(max_sessions: int, log: Path, blocks: int = 3, per_block: int = 100) -> dict:
    """The server's memory as new client sessions arrive (one 2-step request each), `per_block`
    at a time, on a server that keeps `max_sessions` sessions."""
    server = ServerProcess("--max-sessions", str(max_sessions), log=log)
    try:
        run_load(server.url, users=1, steps=2)
        rss = [server.rss_mib()]
        for _ in range(blocks):
            for seed in range(per_block):
                run_load(server.url, users=1, steps=2)
            rss.append(server.rss_mib())
            print("sessions", rss, flush=True)
    finally:
        server.stop()
    return {"max_sessions": max_sessions, "per_block": per_block, "rss_mib": rss}


def _sequential(parts: list[dict]) -> dict:
    """One user's requests one after another, summed into `run_load`'s shape."""
    latencies = [p["latency_s"]["mean"] for p in parts if p["completed"]]
    wall = sum(p["wall_s"] for p in parts)
    completed = sum(p["completed"] for p in parts)
    return {"users": 1, "steps": parts[0]["steps"], "completed": completed,
            "failed": sum(p["failed"] for p in parts), "lost": sum(p["lost"] for p in parts),
            "errors": [e for p in parts for e in p["errors"]][:5], "wall_s": wall,
            "images_per_s": completed / wall,
            "latency_s": {"min": min(latencies), "max": max(latencies),
                          "mean": sum(latencies) / len(latencies)}}


def render(results: dict) -> list[str]:
    lines = [f"{results['users']} requests per case (one image each, 64×64, the bundled prompt "
             "\"red heart\", seeds 0…19), each case run "
             f"{results['repeats']} times, with the model's own sampler (DDIM, the student's "
             "consistency sampler) and guidance (3). *concurrent*: "
             f"{results['users']} clients (one browser session each) send at the same moment and "
             "the server's queue runs them one at a time; *sequential*: one client sends the same "
             "requests one after another; *direct*: the server's job function called in the "
             "script's own process, no server (the server's overhead is the difference). Every "
             "result is checked (its PNG carries its own seed and prompt). Clients and server "
             "share the machine's cores.", "",
             "| model | steps | mode | completed / failed / lost | wall (s) | images/s | "
             "latency mean / max (s) | server RSS after (MiB) |", "|---|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        latency = r["latency_s"]
        lines.append(f"| {r['model']} | {r['steps']} | {r['mode']} (round {r['repeat'] + 1}) | "
                     f"{r['completed']} / {r['failed']} / {r['lost']} | {r['wall_s']:.2f} | "
                     f"{r['images_per_s']:.2f} | {latency['mean']:.2f} / {latency['max']:.2f} | "
                     f"{r['rss_mib']:.0f} |")
    lines += ["", f"Server memory: {results['rss_idle_mib']:.0f} MiB with both models loaded "
              f"and warm, {results['rss_peak_mib']:.0f} MiB at most after any case."]
    m = results["sessions"]
    steps = ", ".join(f"{m['per_block'] * i}: {rss:.0f}" for i, rss in enumerate(m["rss_mib"]))
    lines += ["", "Memory as sessions arrive, on a server started with `--max-sessions "
              f"{m['max_sessions']}` (each new client session sends one 2-step request; sessions "
              f"seen: server RSS in MiB): {steps}."]
    return lines


if __name__ == "__main__":
    main()
