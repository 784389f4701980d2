"""Two processes (gloo, CPU) take one AdamW step on halves of the global batch and end with the
weights of one process that saw the whole batch.

AdamW's first step moves each weight by lr·g/(|g| + ε): about ±lr wherever |g| ≫ ε = 1e-8. Elements
whose gradient is zero in exact arithmetic (attention key biases; conv biases feeding a GroupNorm
with one channel per group) carry only float noise, and Adam turns its sign, which depends on the
reduction order, into a ±lr step. The comparison is therefore made on every element with a
well-conditioned update (|Δ| > 0.999·lr in the one-process run), and these must be nearly all
elements. Without gradient synchronisation the half-batch gradients disagree in sign on many
elements, so the test fails.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import tiny_autoencoder_config, tiny_ldm_config
from safetensors import safe_open
from test_stream import _streamed_text, make_folder, make_shards
from latentdiff.autoencoder import AutoencoderKL
from latentdiff.checkpoints import read_metadata, read_tensors
from latentdiff.config import to_yaml
from latentdiff.data.latent_shards import read_latent_records
from latentdiff.train.autoencoder import train_autoencoder
from latentdiff.train.diffusion import train_latent_diffusion
from latentdiff.train.engine import seeded
from latentdiff.unet import UNetModel

TWO_PROCESSES = ["train.devices=2", "train.accelerator=cpu", "train.strategy=ddp"]
ONE_STEP = (  # no warm-up or clipping: the first AdamW step is lr·g/(|g| + ε)
   "train.max_steps=1", "train.batch_size=8", "train.warmup_steps=0", "train.grad_clip=0")


def run_two_processes(command: str, cfg, tmp_path):
    path = tmp_path / f"{command}.yaml"
    path.write_text(to_yaml(cfg))
    done = subprocess.run([sys.executable, "-m", "latentdiff", command, str(path), *TWO_PROCESSES],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    checkpoint = tmp_path / "two" / "checkpoints" / "last.safetensors"
    # really two processes, no silent fallback
    assert read_metadata(checkpoint)["train_state"]["world_size"] == 2
    return checkpoint


def assert_same_steps(initial: dict, one, two, prefix: str, threshold: float, coverage: float,
                      skip: tuple[str, ...] = ()) -> None:
    """Weights agree (5e-6, 0.5% of an lr-sized step) wherever the one-process update is above
    `threshold`; that is most elements. Adam's second step amplifies reduction-order noise: nearly
    all elements agree within 8e-7, a few in ~10⁵ reach 2.3e-6 (measured, latent diffusion); without
    gradient synchronisation they differ by ~lr."""
    a, b = read_tensors(one, prefix), read_tensors(two, prefix)
    compared = total = 0
    for key, start in initial.items():
        if key.endswith(skip):
            continue
        update = a[key] - start
        well_conditioned = update.abs() > threshold
        torch.testing.assert_close(b[key][well_conditioned], a[key][well_conditioned],
                                   rtol=0, atol=5e-6, msg=key)
        compared, total = compared + int(well_conditioned.sum()), total + update.numel()
    assert compared > coverage * total, f"only {compared} of {total} elements had a well-conditioned update"


@pytest.mark.slow
def test_autoencoder_two_processes_equal_one(tmp_path):
    cfg = tiny_autoencoder_config(tmp_path / "one", *ONE_STEP)
    one = train_autoencoder(cfg)
    assert read_metadata(one)["train_state"]["world_size"] == 1
    two = run_two_processes("train-autoencoder",
                            tiny_autoencoder_config(tmp_path / "two", *ONE_STEP), tmp_path)
    initial = seeded(cfg.train.seed, lambda: AutoencoderKL(cfg.model)).state_dict()
    assert_same_steps(initial, one, two, "autoencoder.",
                      threshold=0.999 * cfg.train.lr, coverage=0.97)


@pytest.mark.slow
def test_latent_diffusion_two_processes_equal_one(tmp_path, trained_autoencoder):
    # Two steps: after the first only the zero-initialised output conv has a gradient. 64 channels
    # give GroupNorm two channels per group (so biases before it get real gradients); qkv biases
    # hold the zero-gradient key bias. Deep layers' gradients pass through output convs that are
    # only ~lr in size after one step, so they come out near ε: about a third of the elements
    # (several hundred thousand) have a well-conditioned update.
    extra = (*ONE_STEP, "train.max_steps=2", "unet.model_channels=64", "unet.head_channels=64")
    cfg = tiny_ldm_config(tmp_path / "one", trained_autoencoder, *extra)
    one = train_latent_diffusion(cfg)
    two = run_two_processes("train",
                            tiny_ldm_config(tmp_path / "two", trained_autoencoder, *extra),
                            tmp_path)
    initial = seeded(cfg.train.seed, lambda: UNetModel(cfg.unet)).state_dict()
    assert_same_steps(initial, one, two, "unet.", threshold=0.2 * cfg.train.lr,
                      coverage=0.3, skip=("qkv.bias",))


@pytest.mark.slow
@pytest.mark.parametrize("source", ["webdataset", "folder"])
def test_streamed_two_processes_equal_one(tmp_path, rgb_autoencoder, source):
    """Over WebDataset shards and a folder with metadata.jsonl, each of two processes reads its own
    half of every global batch in DataLoader workers (test_stream checks the halves are disjoint),
    and the run ends with the one-process weights."""
    path = make_shards(tmp_path / "data") if source == "webdataset" else make_folder(tmp_path / "data")
    data = [f"data.dataset={source}", f"data.path={path}", "data.workers=1",
            *(["data.stream=true"] if source == "folder" else [])]
    extra = (*ONE_STEP, "train.max_steps=2", "unet.model_channels=64", "unet.head_channels=64")
    cfg = _streamed_text(tmp_path / "one", rgb_autoencoder, data, *extra)
    one = train_latent_diffusion(cfg)
    # the folder's two processes also accumulate gradients over 2 micro-batches each
    accumulate = ["train.accumulate=2"] if source == "folder" else []
    two = run_two_processes("train", _streamed_text(tmp_path / "two", rgb_autoencoder, data, *extra,
                                                    *accumulate), tmp_path)
    initial = seeded(cfg.train.seed, lambda: UNetModel(cfg.unet)).state_dict()
    # the text model's cross-attention leaves fewer well-conditioned elements (29.8 % measured)
    assert_same_steps(initial, one, two, "unet.", threshold=0.2 * cfg.train.lr,
                      coverage=0.25, skip=("qkv.bias",))
    losses = [[json.loads(line)["loss"] for line in (tmp_path / name / "metrics.jsonl").open()]
              for name in ("one", "two")]
    assert losses[1][0] == pytest.approx(losses[0][0], rel=1e-6)  # the same global batch at step 1


@pytest.mark.slow
def test_two_processes_encode_latents_of_one(tmp_path, rgb_autoencoder):
    """encode-latents shares the shards between processes; the folder equals one process's."""
    data = make_folder(tmp_path / "images")
    for name, launch in (("one", []), ("two", TWO_PROCESSES)):
        done = subprocess.run([sys.executable, "-m", "latentdiff", "encode-latents", data,
                               str(rgb_autoencoder), str(tmp_path / name), "data.image_size=16",
                               "shard_size=5", *(o.removeprefix("train.") for o in launch)],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    one, two = (read_latent_records(tmp_path / name) for name in ("one", "two"))
    assert one.captions == two.captions and len(one.files) == 3
    for a, b in zip(one.files, two.files):
        with safe_open(a, "pt") as f, safe_open(b, "pt") as g:
            assert all(torch.equal(f.get_tensor(k), g.get_tensor(k)) for k in f.keys())


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_and_slurm_launches_equal_one_process(tmp_path, rgb_autoencoder):
    """The documented multi-node launches: torchrun starting the processes itself, and srun (its
    environment emulated: 2 tasks on one node); Fabric joins them instead of starting its own."""
    data = ["data.dataset=webdataset", f"data.path={make_shards(tmp_path / 'data')}"]
    extra = (*ONE_STEP, "train.max_steps=2", "unet.model_channels=64", "unet.head_channels=64")
    cfg = _streamed_text(tmp_path / "one", rgb_autoencoder, data, *extra)
    one = train_latent_diffusion(cfg)
    initial = seeded(cfg.train.seed, lambda: UNetModel(cfg.unet)).state_dict()
    for launcher in ("torchrun", "slurm"):
        out = tmp_path / launcher
        config = tmp_path / f"{launcher}.yaml"
        config.write_text(to_yaml(_streamed_text(out, rgb_autoencoder, data, *extra)))
        command = ["-m", "latentdiff", "train", str(config), *TWO_PROCESSES]
        if launcher == "torchrun":
            runs = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone",
                                      "--nproc-per-node=2", *command], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)]
        else:
            port = _free_port()
            runs = [subprocess.Popen([sys.executable, *command], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2",
                                          "SLURM_NNODES": "1", "SLURM_NODEID": "0",
                                          "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank),
                                          "SLURM_JOB_NAME": "train", "SLURM_JOB_ID": "1234",
                                          "SLURM_NODELIST": "127.0.0.1", "MASTER_PORT": str(port)})
                    for rank in range(2)]
        for run in runs:
            _, stderr = run.communicate(timeout=300)
            assert run.returncode == 0, f"{launcher}: {stderr[-3000:]}"
        checkpoint = out / "checkpoints" / "last.safetensors"
        assert read_metadata(checkpoint)["train_state"]["world_size"] == 2
        assert_same_steps(initial, one, checkpoint, "unet.", threshold=0.2 * cfg.train.lr,
                          coverage=0.25, skip=("qkv.bias",))
