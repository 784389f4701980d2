"""Loading a full-size Stable Diffusion v1 UNet (859.5 M parameters, random weights): from an original-layout
safetensors file (latentdiff against diffusers' `UNet2DConditionModel.from_single_file` on the same file), or with
`--layout folder` from a diffusers `unet/` folder (`load_diffusers_unet` against `UNet2DConditionModel.from_pretrained`).

Each loader runs in a fresh process (neither inherits the other's Python objects, and peak memory is the process's
own). Every import both loaders need happens before the timer, also diffusers' lazily imported modules. Then the
same file is loaded twice: the first load in the process (what a command pays) and a second one (what a service
that loads many models pays); each until every weight has been read once (a sum over all parameters), so that a
loader that memory-maps the file pays for paging it in, as a first forward pass would. The file is in the page
cache for both (an earlier run warms it). Peak resident memory above the footprint after the imports is taken after
the first load, as a multiple of the weights' size. Repetitions alternate which loader runs first; medians and the
ratios ours/theirs are printed (the machine is shared: read the ratios).

    python benchmarks/bench_loading.py [--layout single-file|folder] [--workdir /tmp/latentdiff-bench-loading]
                                       [--reps 3]
"""

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import gc, json, resource, sys, time
import torch
from pathlib import Path
which, path, yaml = sys.argv[1], sys.argv[2], sys.argv[3]

def rss_bytes():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024

# every import and attribute lookup of both loaders happens here, before any timer (diffusers imports its modules
# lazily, on first access: 4 s of imports would otherwise count as loading)
folder = Path(path).is_dir()
if which == "latentdiff" and folder:
    from latentdiff.checkpoints.interop.diffusers_folder import load_diffusers_unet
    load = lambda: load_diffusers_unet(path)
elif which == "latentdiff":
    from latentdiff.checkpoints.interop.compvis import load_original_unet, original_config, read_yaml
    load = lambda: load_original_unet(path, original_config(read_yaml(yaml)).unet)
else:
    import diffusers
    import diffusers.loaders.single_file_model, diffusers.loaders.single_file_utils  # noqa: E401 (lazy modules)
    diffusers.utils.logging.set_verbosity_error()
    cls = diffusers.UNet2DConditionModel
    if folder:
        load = lambda: cls.from_pretrained(path, local_files_only=True)
    else:
        load = lambda: cls.from_single_file(path, original_config=yaml, local_files_only=True)

def timed():
    start = time.perf_counter()
    unet = load()
    checksum = sum(float(p.float().sum()) for p in unet.parameters())  # touch every weight (memory-mapped ones too)
    return unet, time.perf_counter() - start

before = rss_bytes()
unet, cold = timed()  # the first load in this process: the loaders' own first-use work included
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
params = sum(p.numel() * p.element_size() for p in unet.parameters())
del unet
gc.collect()
_, warm = timed()  # a second load in the same process
print(json.dumps({"cold": cold, "warm": warm, "peak_above_start": peak - before, "weights": params}))
"""


def make_file(workdir: Path) -> tuple[Path, Path]:
    """The SD-v1 UNet with N(0, 0.02) weights under model.diffusion_model.*, and the bundled v1-inference YAML."""
    import torch
    from safetensors.torch import save_file

    from latentdiff.checkpoints.interop.compvis import ORIGINAL_CONFIGS, UNET, original_config, read_yaml
    from latentdiff.unet import UNetModel

    yaml = ORIGINAL_CONFIGS / "sd-v1-inference.yaml"
    path = workdir / "sd-v1-unet.safetensors"
    if not path.is_file():
        workdir.mkdir(parents=True, exist_ok=True)
        generator = torch.Generator().manual_seed(0)
        with torch.device("meta"):
            unet = UNetModel(original_config(read_yaml(yaml)).unet)
        state = {UNET + k: torch.randn(v.shape, generator=generator) * 0.02 for k, v in unet.state_dict().items()}
        save_file(state, str(path))
    return path, yaml


def make_folder(workdir: Path, path: Path, yaml: Path) -> Path:
    """The same UNet as a diffusers unet/ folder (config.json + diffusion_pytorch_model.safetensors), written by
    latentdiff's save path (its renaming and config)."""
    from safetensors.torch import load_file, save_file

    from latentdiff.checkpoints.interop.compvis import UNET, original_config, read_yaml
    from latentdiff.checkpoints.interop.diffusers_configs import unet_to_diffusers
    from latentdiff.checkpoints.interop.diffusers_names import convert_names, unet_blocks

    folder = workdir / "sd-v1-unet"
    if not (folder / "diffusion_pytorch_model.safetensors").is_file():
        cfg = original_config(read_yaml(yaml)).unet
        ours = {k[len(UNET):]: v for k, v in load_file(str(path)).items()}
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(unet_to_diffusers(cfg, 64), indent=2))
        save_file(convert_names(ours, unet_blocks(cfg), True)[0], str(folder / "diffusion_pytorch_model.safetensors"))
    return folder


def run(which: str, path: Path, yaml: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, which, str(path), str(yaml)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/latentdiff-bench-loading"))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--layout", choices=("single-file", "folder"), default="single-file")
    args = parser.parse_args()
    path, yaml = make_file(args.workdir)
    if args.layout == "folder":
        path = make_folder(args.workdir, path, yaml)
    size = sum(f.stat().st_size for f in ([path] if path.is_file() else path.iterdir()))
    print(f"{args.layout}: {path} ({size / 2**30:.2f} GiB)")
    results = {"latentdiff": [], "diffusers": []}
    for rep in range(args.reps):  # alternate which loader runs first
        for which in (("latentdiff", "diffusers") if rep % 2 == 0 else ("diffusers", "latentdiff")):
            results[which].append(run(which, path, yaml))
    print("\n| loader | first load in a process (median) | second load (median) | peak memory above start / "
          "weights (median) |")
    print("|---|---|---|---|")
    medians = {}
    for which, runs in results.items():
        cold, warm = (statistics.median(r[key] for r in runs) for key in ("cold", "warm"))
        memory = statistics.median(r["peak_above_start"] / r["weights"] for r in runs)
        medians[which] = (cold, warm, memory)
        print(f"| {which} | {cold:.2f} s | {warm:.2f} s | {memory:.2f}× |")
    ours, theirs = medians["latentdiff"], medians["diffusers"]
    print(f"\nratio latentdiff/diffusers: first load {ours[0] / theirs[0]:.2f}, second load {ours[1] / theirs[1]:.2f}; "
          f"peak memory {ours[2]:.2f}× the weights (diffusers {theirs[2]:.2f}×)")


if __name__ == "__main__":
    main()
