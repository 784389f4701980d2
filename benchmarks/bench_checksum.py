"""What the content checksum of latentdiff checkpoints costs: writing 1 GB of weights with
latentdiff's writer (SHA-256 computed on the way, fsync, atomic rename) against safetensors' own
`save_file` on the same tensors, and reading them back with and without the verification
(`--no-verify`). Interleaved repetitions, medians, ratios.

The file is read back right after it was written, so it is in the page cache: the times are the
hashing and copying work, not the disk; from a cold disk both readings pay the same extra read time.

    python benchmarks/bench_checksum.py [--gigabytes 1] [--reps 3] [--workdir /tmp/latentdiff-bench-checksum]
"""

import argparse
import shutil
import statistics
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from latentdiff.checkpoints import io


def tensors_of(gigabytes: float) -> dict[str, torch.Tensor]:
    """fp32 tensors of 4 M elements (16 MiB each), like a UNet's larger weights, summing to
    `gigabytes`."""
    count = max(1, round(gigabytes * 2 ** 30 / (16 * 2 ** 20)))
    generator = torch.Generator().manual_seed(0)
    return {f"unet.block{i}.weight": torch.randn(2048, 2048, generator=generator)
            for i in range(count)}


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def read_all(path: Path, verify: bool) -> None:
    # the verification is done once per file and process: measure it every time
    io._verified.clear()
    if verify:
        io.read_tensors(path)
    else:
        with io.trusted_files():
            io.read_tensors(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gigabytes", type=float, default=1.0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/latentdiff-bench-checksum"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    tensors = tensors_of(args.gigabytes)
    size = sum(t.numel() * t.element_size() for t in tensors.values())
    ours, theirs = args.workdir / "latentdiff.safetensors", args.workdir / "safetensors.safetensors"
    times = {"latentdiff write": [], "safetensors write": [], "read, verified": [],
             "read, --no-verify": []}
    for rep in range(args.reps):
        writers = [("latentdiff write",
                    lambda: io.save_checkpoint(ours, tensors, {"kind": "bench"})),
                   ("safetensors write", lambda: save_file(tensors, str(theirs)))]
        readers = [("read, verified", lambda: read_all(ours, True)),
                   ("read, --no-verify", lambda: read_all(ours, False))]
        for name, function in (writers + readers) if rep % 2 == 0 else (writers[::-1] + readers[::-1]):
            times[name].append(timed(function))
    print(f"{size / 2 ** 30:.2f} GiB of fp32 tensors, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads\n")
    print("| operation | median time | throughput |")
    print("|---|---|---|")
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, seconds in medians.items():
        print(f"| {name} | {seconds:.2f} s | {size / 2 ** 30 / seconds:.2f} GiB/s |")
    verify = medians["read, verified"] - medians["read, --no-verify"]
    print("\nratio latentdiff/safetensors write: "
          f"{medians['latentdiff write'] / medians['safetensors write']:.2f} (latentdiff also "
          f"hashes and fsyncs); verification adds {verify:.2f} s per {size / 2 ** 30:.2f} GiB read "
          f"({verify / (size / 2 ** 30):.2f} s per GiB)")
    shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
