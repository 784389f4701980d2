"""Shared by the experiment scripts: a report folder, reports/<name>/, that ties every number to
code and data.

It holds results.json (the raw results the tables are made from, and the provenance: the script, the
exact commit and whether the tree was clean, the command, the machine, the start and the duration),
README.md rendered from results.json alone by the script's `render` (tests/test_reports.py renders
it again and compares), and plots.
"""

import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from latentdiff.checkpoints import load_latent_diffusion
from latentdiff.checkpoints.models import bundled_model
from latentdiff.files import atomic_write, write_text
from latentdiff.metrics.frechet import FeatureStats, frechet_distance
from latentdiff.evaluation.sample_quality import (cached_features, checkpoint_reference,
                                                  sample_conditions)
from latentdiff.evaluation.autoencoder import stored_data_config

REPO = Path(__file__).resolve().parent.parent
REPORTS = REPO / "reports"


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], capture_output=True, text=True, check=False, cwd=REPO)
    return done.stdout.strip() if done.returncode == 0 else ""


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class Provenance:
    """Where and how a report's numbers were measured; `start()` when the script starts, `finish()`
    at the end."""

    def __init__(self):
        self.started = time.time()
        self.record = {
            # experiments/ or benchmarks/ script, as a path in the repository
            "script": script_path(),
            "command": "python " + shlex.join([script_path(), *sys.argv[1:]]),
            "commit": _git("rev-parse", "HEAD") or "unknown",
            # changes to tracked files or untracked files (outside the ignored runs/ and the reports/
            # that the experiments write) mean the numbers are not the commit's
            "clean": _git("status", "--porcelain", "--", ".", ":(exclude)reports") == "",
            "machine": {"cpu": _cpu(), "cores": _cores(), "threads": torch.get_num_threads(),
                        "python": platform.python_version(), "torch": torch.__version__,
                        "system": f"{platform.system()} {platform.release()}"},
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }

    def finish(self) -> dict:
        return {**self.record, "duration_s": round(time.time() - self.started, 1)}


def script_path() -> str:
    """The running script as a path relative to the repository (e.g. experiments/cfg_sweep.py)."""
    path = Path(sys.argv[0]).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else path.name


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass
class FDSetup:
    """A trained model and what scoring n of its samples by FD needs: the classifier evaluator's
    features, the training split's statistics, the real-vs-real baseline (n held-out images drawn at
    random: the emoji are sorted by Unicode group), n conditions (held-out captions cycled, or
    balanced classes) and the guidance scale."""

    checkpoint: Path
    model: object
    extractor: object
    reference: FeatureStats
    reference_size: int
    baseline: float
    baseline_n: int
    conditions: dict
    guidance: float

    @classmethod
    def of(cls, checkpoint: Path | None, n: int, guidance: float) -> "FDSetup":
        checkpoint = checkpoint or bundled_model()
        model = load_latent_diffusion(checkpoint)
        extractor, train, held, label = checkpoint_reference(model, stored_data_config(checkpoint),
                                                             "classifier")
        reference = FeatureStats.of(cached_features(extractor, train.images, label).features)
        held = held.sample(len(held))
        n_b = min(n, len(held))
        baseline = frechet_distance(FeatureStats.of(extractor(held.images[:n_b])[0]), reference)
        return cls(checkpoint, model, extractor, reference, len(train), baseline, n_b,
                   sample_conditions(model, held, n), guidance if model.trained_with_null else 1.0)


def shown_path(path: str | Path) -> str:
    """A path as the report shows it: relative to the repository when inside it."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(REPO) if resolved.is_relative_to(REPO) else resolved)


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend, or None when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def mean_sd(values, digits: int) -> str:
    """The mean ± the (population) standard deviation of `values`, e.g. over seeds, at `digits`
    decimals."""
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.pstdev(values):.{digits}f}"


def markdown(results: dict, body: list[str]) -> str:
    """README.md of a report: title, provenance, the body the script rendered from `results`, the
    figures."""
    p, title = results["provenance"], results["title"]
    m = p["machine"]
    tree = ("clean tree" if p["clean"]
            else "**uncommitted changes**: the numbers are not reproducible from the commit")
    lines = [f"# {title}", "",
             f"Command: `{p['command']}`  ",
             f"Commit: `{p['commit']}` ({tree})  ",
             f"Machine: {m['cpu']}, {m['cores']} cores, {m['threads']} torch threads, Python "
             f"{m['python']}, torch {m['torch']}, {m['system']}  ",
             f"Started {p['started']}, took {_duration(p['duration_s'])}. Raw results: "
             "`results.json`.", "",
             *body]
    for name in results["figures"]:
        lines += ["", f"![{title}]({name})"]
    if results["no_matplotlib"]:
        lines += ["",
                  "(no plot: matplotlib is not installed; `pip install 'latentdiff[experiments]'`)"]
    return "\n".join(lines) + "\n"


def write_report(name: str, title: str, results: dict, render, provenance: Provenance, plot=None,
                 images: tuple[str, ...] = ()) -> Path:
    """reports/<name>/: results.json (the raw `results`, the title, the figure names and the
    provenance), the plot `plot(plt, results)` as <name>.png when matplotlib is installed, and
    README.md, the script's `render(results)` in `markdown`, every file written atomically.
    `images`: figures the script wrote itself into the folder."""
    folder = REPORTS / name
    plt = pyplot() if plot is not None else None
    figures = ([f"{name}.png"] if plt is not None else []) + list(images)
    results = {**results, "title": title, "figures": sorted(figures),
               "no_matplotlib": plot is not None and plt is None,
               "provenance": provenance.finish()}
    # what results.json holds (tuples as lists), rendered as read back
    results = json.loads(json.dumps(results))
    write_text(folder / "results.json", json.dumps(results, indent=1) + "\n")
    if plt is not None:
        with atomic_write(folder / f"{name}.png") as f:
            plot(plt, results).savefig(f, format="png", dpi=120, bbox_inches="tight")
    path = folder / "README.md"
    write_text(path, markdown(results, render(results)))
    return path
