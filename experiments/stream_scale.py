"""Streamed training at two dataset sizes: memory with 1k and with 50k images, and the time the
training step waits for the data loader (2 worker processes on this CPU).

The images are 64×64 shapes scenes with their captions, written to WebDataset shards of 1,000; the
run is `latentdiff train ldm-emoji-text` (the shipped model's architecture: 64×64 through the bundled
model's f = 8 first stage, text τ_θ, batch 64) on `data.dataset=webdataset`, each run in a fresh
process whose memory is sampled every 0.2 s: the training process's RSS and the proportional set
size (PSS: shared pages split between the processes that share them) of it and its workers.

    python experiments/stream_scale.py            # → reports/stream-scale/
"""

import argparse
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from report import Provenance, write_report

from latentdiff.checkpoints.models import bundled_model
from latentdiff.config import DataConfig
from latentdiff.data.records import read_records
from latentdiff.data.shapes import make_shapes

TITLE = "Streamed training: memory at 1k and 50k images, and the data loader's wait"
PER_SHARD = 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--counts", type=int, nargs="+", default=[1000, 50000])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--repeats", type=int, default=2, help="runs per size (the spread)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--work", type=Path, default=Path("runs/stream-scale"),
                   help="where the shards and runs go")
    p.add_argument("--name", default="stream-scale", help="report folder under reports/")
    args = p.parse_args()
    provenance = Provenance()
    rows, indexing = [], []
    for count in args.counts:
        pattern = _shards(args.work / f"shards-{count}", count)
        began = time.perf_counter()
        records = read_records(DataConfig(dataset="webdataset", path=pattern))
        indexing.append({"images": count, "records": len(records),
                         "seconds": round(time.perf_counter() - began, 2)})
        for repeat in range(args.repeats):
            row = _train(pattern, args.work / f"run-{count}-{repeat}", args.steps, args.workers)
            row.update(images=count, repeat=repeat)
            print(row, flush=True)
            rows.append(row)
    results = {"steps": args.steps, "workers": args.workers, "repeats": args.repeats,
               "rows": rows, "indexing": indexing}
    print(write_report(args.name, TITLE, results, render, provenance))


def _shards(folder: Path, count: int) -> str:
    """`count` shapes scenes (64×64 PNG + caption) in shards of PER_SHARD, made once."""
    shards = (count + PER_SHARD - 1) // PER_SHARD
    pattern = str(folder / ("{000000..%06d}.tar" % (shards - 1)))
    if (folder / "done").exists():
        return pattern
    import webdataset as wds

    folder.mkdir(parents=True, exist_ok=True)
    with wds.ShardWriter(str(folder / "%06d.tar"), maxcount=PER_SHARD, verbose=0) as sink:
        for start in range(0, count, 5000):
            scenes = make_shapes(min(5000, count - start), 64, seed=start, holdout=0)
            for i, caption in enumerate(scenes.captions):
                buffer = io.BytesIO()
                Image.fromarray(scenes.images[i].permute(1, 2, 0).numpy()).save(buffer, "png")
                sink.write({"__key__": f"{start + i:08d}", "png": buffer.getvalue(), "txt": caption})
    (folder / "done").write_text("")
    return pattern


def _memory(pid: int) -> tuple[float, float]:
    """(RSS of `pid`, PSS of it and its child processes) in MiB."""
    def field(path: str, name: str) -> float:
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith(name):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    children = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    pss = sum(field(f"/proc/{p}/smaps_rollup", "Pss:") for p in [pid, *children])
    return field(f"/proc/{pid}/status", "VmRSS:"), pss


def _train(pattern: str, out: Path, steps: int, workers: int) -> dict:
    command = [sys.executable, "-m", "latentdiff", "train", "ldm-emoji-text",
               f"autoencoder={bundled_model()}", "data.dataset=webdataset", f"data.path={pattern}",
               f"data.workers={workers}", "data.holdout=100", f"train.max_steps={steps}",
               f"train.out_dir={out}", "train.log_every=10", "train.sample_every=0",
               "train.checkpoint_every=0", "preview.steps=2", "preview.per_class=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    began = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    rss, pss = [], []
    while process.poll() is None:
        r, s = _memory(process.pid)
        if r:
            rss.append(r)
            pss.append(s)
        time.sleep(0.2)
    stderr = process.stderr.read()
    if process.returncode:
        raise SystemExit(f"training failed:\n{stderr[-3000:]}")
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steady = logged[1:]  # the first interval includes the workers' start
    span = steady[-1]["time_s"] - logged[0]["time_s"]
    return {"rss_peak_mib": round(max(rss), 1), "pss_peak_mib": round(max(pss), 1),
            "data_wait": [r["data_wait"] for r in logged],
            "data_wait_steady": round(float(np.mean([r["data_wait"] for r in steady])), 4),
            "step_s": round(span / (steady[-1]["step"] - logged[0]["step"]), 3),
            "skipped_files": logged[-1]["skipped_files"],
            "wall_s": round(time.perf_counter() - began, 1)}


def render(results: dict) -> list[str]:
    lines = [f"`latentdiff train ldm-emoji-text` on WebDataset shards of 64×64 shapes scenes, "
             f"{results['steps']} steps of batch 64, data.workers={results['workers']}, each size "
             f"run {results['repeats']} times in a fresh process. RSS: the training process; PSS: "
             "it and its DataLoader workers, shared pages split between them. Data wait: the "
             "fraction of the time between two log lines (10 steps) the training step spent "
             "waiting for its batch; *steady* leaves out the first 10 steps (the workers' start).",
             "", "| images | run | peak RSS (MiB) | peak PSS with workers (MiB) | step (s) | "
             "data wait, steady | data wait per 10 steps | skipped files |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        waits = " ".join(f"{w:.3f}" for w in r["data_wait"])
        lines.append(f"| {r['images']:,} | {r['repeat'] + 1} | {r['rss_peak_mib']:.0f} | "
                     f"{r['pss_peak_mib']:.0f} | {r['step_s']:.2f} | "
                     f"{100 * r['data_wait_steady']:.2f} % | {waits} | {r['skipped_files']} |")
    sizes = sorted({r["images"] for r in results["rows"]})
    if len(sizes) >= 2:
        def mean(key: str, size: int) -> float:
            return float(np.mean([r[key] for r in results["rows"] if r["images"] == size]))
        change = {key: 100 * (mean(key, sizes[-1]) / mean(key, sizes[0]) - 1)
                  for key in ("rss_peak_mib", "pss_peak_mib")}
        lines += ["", f"At {sizes[-1]:,} images against {sizes[0]:,} (means over the runs): peak "
                  f"RSS of the training process {change['rss_peak_mib']:+.1f} %, peak PSS of it "
                  f"and its workers {change['pss_peak_mib']:+.1f} %."]
    index = ", ".join(f"{r['images']:,} images in {r['seconds']:.2f} s" for r in results["indexing"])
    lines += ["", f"Building the shard index (every tar header and caption read once, at the "
              f"start of each run): {index}."]
    return lines


if __name__ == "__main__":
    main()
