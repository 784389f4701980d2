"""The GPU benchmark script runs (tiny models, CPU): it cannot be timed here, but it must not rot
between the sessions that have a GPU to run it on."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_gpu_throughput_smoke_run_compares_both_implementations():
    done = subprocess.run([sys.executable, "benchmarks/gpu_throughput.py", "--tiny", "--device",
                           "cpu", "--reps", "1", "--no-compile"], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    table = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 4  # header, UNet and autoencoder on both sides
    assert sum("latentdiff" in line for line in table) == 2
    assert sum("diffusers" in line for line in table) == 2
