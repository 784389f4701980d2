"""Shared by the experiment scripts: a markdown report with its plots, written to reports/<name>/."""

import platform
import subprocess
import sys
from pathlib import Path

import torch

REPORTS = Path(__file__).resolve().parent.parent / "reports"


def machine() -> str:
    """One line on where the numbers were measured (they are only comparable on the same machine)."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False,
                            cwd=Path(__file__).parent).stdout.strip() or "unknown"
    return (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch "
            f"{torch.__version__}, commit {commit}")


def shown_path(path: str | Path) -> str:
    """A path as the report shows it: relative to the working directory when inside it."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(Path.cwd()) if resolved.is_relative_to(Path.cwd()) else resolved)


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend, or None when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_report(name: str, title: str, body: list[str], figure=None, plot: bool = True) -> Path:
    """reports/<name>/README.md (+ <name>.png from a matplotlib figure, or, when `plot` and the figure is None, a line
    saying why there is none); the command line is recorded."""
    folder = REPORTS / name
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"# {title}", "", f"Command: `python {' '.join(sys.argv)}`  ", f"Machine: {machine()}", "", *body]
    if figure is not None:
        figure.savefig(folder / f"{name}.png", dpi=120, bbox_inches="tight")
        lines += ["", f"![{title}]({name}.png)"]
    elif plot:
        lines += ["", "(no plot: matplotlib is not installed; `pip install 'latentdiff[experiments]'`)"]
    path = folder / "README.md"
    path.write_text("\n".join(lines) + "\n")
    return path
