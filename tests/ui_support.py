"""Shared by the web UI tests: a folder of tiny models of every kind, and a `latentdiff serve`
process on a free local port."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from conftest import tiny_autoencoder_config, tiny_ldm_config
from test_conditional_train import SHAPES, conditional_config

from latentdiff.train.autoencoder import train_autoencoder
from latentdiff.train.diffusion import train_latent_diffusion

KINDS = ("text", "superres", "layout", "semantic", "inpaint")


def tiny_models(folder: Path) -> dict[str, Path]:
    """2-step checkpoints of each kind on 16×16 shapes, and a class-conditional digits model, as
    folder/<kind>.safetensors."""
    folder.mkdir(parents=True, exist_ok=True)
    work = folder.parent / f"{folder.name}-runs"
    shapes_ae = train_autoencoder(tiny_autoencoder_config(work / "ae", *SHAPES,
                                                          "model.in_channels=3", "train.max_steps=2",
                                                          "train.checkpoint_every=2"))
    models = {}
    for kind in KINDS:
        checkpoint = train_latent_diffusion(conditional_config(work / kind, shapes_ae, kind,
                                                               "train.max_steps=2"))
        models[kind] = Path(shutil.copy(checkpoint, folder / f"{kind}.safetensors"))
    digits_ae = train_autoencoder(tiny_autoencoder_config(work / "ae-digits", "train.max_steps=2",
                                                          "train.checkpoint_every=2"))
    checkpoint = train_latent_diffusion(tiny_ldm_config(work / "digits", digits_ae,
                                                        "conditioning.drop_prob=0.2",
                                                        "unet.num_classes=11", "train.max_steps=2"))
    models["class"] = Path(shutil.copy(checkpoint, folder / "class.safetensors"))
    return models


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeProcess:
    """`latentdiff serve ARGS` in a child process, waited for until the page answers; `stop()`
    ends it."""

    def __init__(self, *args: str, log: Path, timeout: float = 180):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        self.log = open(log, "w")
        self.process = subprocess.Popen([sys.executable, "-m", "latentdiff", "serve", *args,
                                         "--port", str(self.port), "--device", "cpu"],
                                        stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                self.log.close()
                raise RuntimeError(f"serve exited with {self.process.returncode}: "
                                   f"{Path(log).read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url, timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"serve did not answer in {timeout:.0f} s")
            time.sleep(0.5)

    def rss_mib(self) -> float:
        """The server's resident memory in MiB (Linux)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()
